"""A branch over HTTP: the untaken side is `skipped`, the task succeeds (status 3), load refuses bad branches."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Api
from tests.processes import SAMPLE_FLOWS, last_json_line, run_cli, sqlite_url


def greeting(**extra: Any) -> dict[str, Any]:
    """start → switch on mood; happy → yay, sad → meh (templates); both feed e's text (join: any)."""
    return {
        "id": "greet",
        "nodes": [
            {"id": "s", "type": "start", "settings": {"data": {"mood": "happy", "name": "Ada"}}},
            {"id": "sw", "type": "switch", "settings": {"cases": {"happy": "happy", "sad": "sad"}, "default": "sad"}},
            {"id": "yay", "type": "template", "settings": {"template": "Great, {{ name }}!"}},
            {"id": "meh", "type": "template", "settings": {"template": "Sorry, {{ name }}."}},
            {"id": "e", "type": "end", "join": "any"},
        ],
        "edges": [
            {"from": "s", "output": "mood", "to": "sw", "input": "value"},
            {"from": "s", "output": "name", "to": "yay", "input": "name"},
            {"from": "s", "output": "name", "to": "meh", "input": "name"},
            {"from": "sw", "to": "yay", "when": "happy"},
            {"from": "sw", "to": "meh", "when": "sad"},
            {"from": "yay", "output": "text", "to": "e", "input": "text"},
            {"from": "meh", "output": "text", "to": "e", "input": "text"},
        ],
        **extra,
    }


@pytest.mark.parametrize(("mood", "text", "skipped"), [
    ("happy", "Great, Ada!", "meh"), ("sad", "Sorry, Ada.", "yay"), ("bored", "Sorry, Ada.", "yay"),
])
async def test_the_untaken_side_is_skipped_and_the_task_succeeds(api: Api, mood: str, text: str, skipped: str) -> None:
    await api.put_flow(greeting())
    body = {"node_settings": {"s": {"data": {"mood": mood}}}}
    task = await api.execute("greet", body, params={"wait": "10"})
    assert task["status"] == 3 and task["status_name"] == "succeeded" and task["error"] is None
    assert task["result"] == {"text": text}
    assert task["nodes"][skipped]["status"] == "skipped"
    shown = await api.json("GET", f"/api/v1/task/{task['id']}", 200)
    assert shown["nodes"][skipped]["status"] == "skipped"


async def test_no_match_without_default_fails_naming_the_value(api: Api) -> None:
    flow = greeting()
    del flow["nodes"][1]["settings"]["default"]
    await api.put_flow(flow)
    task = await api.execute("greet", {"node_settings": {"s": {"data": {"mood": "bored"}}}}, params={"wait": "10"})
    assert task["status"] == 4 and task["error"]["code"] == "node_failed" and task["error"]["node_id"] == "sw"
    assert "'bored'" in task["error"]["message"]
    assert {task["nodes"][n]["status"] for n in ("yay", "meh", "e")} == {"skipped"}


async def test_put_refuses_a_when_naming_no_case_and_a_lonely_join_any(api: Api) -> None:
    flow = greeting()
    flow["edges"][4]["when"] = "angry"
    flow["nodes"][0]["join"] = "any"
    message = (await api.put_flow(flow, status=422))["error"]["message"]
    assert "switch 'sw' has no case 'angry' (its cases: happy, sad)" in message
    assert "nodes.0.join: 'any' needs two predecessors or more to choose from (node 's' has 0)" in message
    assert (await api.json("GET", "/api/v1/flows/greet", 404))["error"]["code"]


@pytest.mark.parametrize(("mood", "text", "skipped"), [
    ("happy", "Great to see you, Grace!", "console"), ("tired", "Sorry to hear that, Grace.", "cheer"),
])
async def test_the_shipped_branch_sample_takes_one_side(api: Api, mood: str, text: str, skipped: str) -> None:
    body = {"node_settings": {"start": {"data": {"mood": mood, "name": "Grace"}}}}
    task = await api.execute("branch-greeting", body, params={"wait": "10"})
    assert task["status"] == 3 and task["result"] == {"text": text}
    assert task["nodes"][skipped]["status"] == "skipped" and task["nodes"]["mood"]["status"] == "succeeded"


def test_graph_runtime_run_takes_the_branch_the_input_names(tmp_path: Path) -> None:
    result = run_cli("run", "branch-greeting", "--set", "start.data.mood=sad", "--db", sqlite_url(tmp_path / "x.db"),
                     "--flows", str(SAMPLE_FLOWS), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    task = last_json_line(result.stdout)
    assert task["status"] == 3 and task["result"] == {"text": "Sorry to hear that, Ada."}
    assert task["nodes"]["cheer"]["status"] == "skipped"


async def test_plan_leaves_the_branches_out_of_the_minimum_cost(api: Api) -> None:
    # test.echo costs 0.5 a run: A and B are the branches (either may be skipped, even both: a case
    # may have no edge), C runs whatever the switch decides.
    flow = {
        "id": "priced",
        "nodes": [{"id": "s", "type": "start", "settings": {"data": {"x": 1}}},
                  {"id": "sw", "type": "switch", "settings": {"cases": {"a": 1, "b": 2}}},
                  {"id": "A", "type": "test.echo"}, {"id": "B", "type": "test.echo"}, {"id": "C", "type": "test.echo"},
                  {"id": "j", "type": "merge", "join": "any"}, {"id": "e", "type": "end"}],
        "edges": [{"from": "s", "output": "x", "to": "sw", "input": "value"}, {"from": "s", "to": "C"},
                  {"from": "sw", "to": "A", "when": "a"}, {"from": "sw", "to": "B", "when": "b"},
                  {"from": "A", "to": "j"}, {"from": "B", "to": "j"}, {"from": "j", "to": "e"}, {"from": "C", "to": "e"}],
    }
    await api.put_flow(flow)
    answer = await api.json("POST", "/api/v1/flow/priced/plan", 200, json={})
    assert answer["estimated_cost"] == {"min": 0.5, "max": 1.5}


async def test_a_rerun_from_a_branch_node_takes_no_value_for_its_control_edge(api: Api) -> None:
    flow = {"id": "strict", "nodes": [{"id": "s", "type": "start", "settings": {"data": {"v": 5}}},
                                      {"id": "sw", "type": "switch", "settings": {"cases": {"five": 5}}},
                                      {"id": "c", "type": "constant", "settings": {"value": "taken"}}],
            "edges": [{"from": "s", "output": "v", "to": "sw", "input": "value"},
                      {"from": "sw", "to": "c", "when": "five"}],
            "defaults": {"end_node_id": "c"}}
    await api.put_flow(flow)
    first = await api.execute("strict", {}, params={"wait": "10"})
    assert first["status"] == 3 and first["result"] == {"value": "taken"}
    # constant has no parameter named after the switch: the control edge must not bring one.
    again = await api.execute("strict", {"from_task_id": first["id"], "start_node_id": "c",
                                         "node_settings": {"c": {"value": "again"}}}, params={"wait": "10"})
    assert again["status"] == 3 and again["result"] == {"value": "again"}
