"""`map` over HTTP (SPEC §9): a node or a child flow per item, in item order, bounded, with on_error."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Api
from tests.processes import last_json_line, run_cli, sqlite_url

PEOPLE = [{"name": "Ada"}, {"name": "Grace"}, {"name": "Edsger"}, {"name": "Barbara"}, {"name": "Alan"}]


def names_flow(item_node: dict[str, Any] | None = None, **map_settings: Any) -> dict[str, Any]:
    """start(people) → map (pick each person's name) → end."""
    node = item_node or {"type": "pick", "settings": {"path": "name"}}
    return {
        "id": "names",
        "nodes": [
            {"id": "s", "type": "start", "settings": {"data": {"people": PEOPLE}}},
            {"id": "m", "type": "map", "settings": {"node": node, "item_input": "value", **map_settings}},
            {"id": "e", "type": "end"},
        ],
        "edges": [
            {"from": "s", "output": "people", "to": "m", "input": "items"},
            {"from": "m", "output": "results", "to": "e", "input": "results"},
        ],
    }


async def run(api: Api, flow_id: str = "names", people: list[Any] | None = None) -> dict[str, Any]:
    body = {} if people is None else {"node_settings": {"s": {"data": {"people": people}}}}
    return await api.execute(flow_id, body, params={"wait": "30"})


async def test_results_come_in_item_order_and_the_task_shows_a_summary(api: Api) -> None:
    await api.put_flow(names_flow())
    task = await run(api)
    assert task["status_name"] == "succeeded", task["error"]
    assert task["result"] == {"results": [{"value": p["name"]} for p in PEOPLE]}
    shown = await api.json("GET", f"/api/v1/task/{task['id']}", 200)
    assert list(shown["nodes"]) == ["s", "m", "e"]  # the items are summarised, not listed
    assert shown["nodes"]["m"]["items"] == {"total": 5, "succeeded": 5, "failed": 0, "running": 0}
    full = await api.json("GET", f"/api/v1/task/{task['id']}", 200, params={"include": "items,outputs"})
    assert [k for k in full["nodes"] if "[" in k] == [f"m[{i}]" for i in range(5)]
    assert full["nodes"]["m[3]"]["output"] == {"value": "Barbara"}
    assert all(full["nodes"][f"m[{i}]"]["status"] == "succeeded" for i in range(5))


async def test_at_most_concurrency_items_run_at_once(api: Api) -> None:
    items = [{"value": i} for i in range(6)]
    flow = names_flow({"type": "delay", "settings": {"seconds": 0.15}}, concurrency=2)
    flow["nodes"][1]["settings"]["item_input"] = "value"
    await api.put_flow(flow)
    task = await run(api, "names", items)
    assert task["status_name"] == "succeeded", task["error"]
    assert task["result"]["results"] == [{"value": item} for item in items]
    full = await api.json("GET", f"/api/v1/task/{task['id']}", 200, params={"include": "items"})
    spans = [(datetime.fromisoformat(full["nodes"][f"m[{i}]"]["started"]),
              datetime.fromisoformat(full["nodes"][f"m[{i}]"]["finished"])) for i in range(6)]
    most = max(sum(1 for start, end in spans if start <= moment < end) for moment, _ in spans)
    assert most == 2


@pytest.mark.parametrize(("on_error", "status", "second"), [
    ("skip", "succeeded", None),
    ("collect", "succeeded", {"error": {"code": "node_failed", "message": "pick: no key 'name' in the object at the value"}}),
])
async def test_skip_and_collect_keep_going_past_a_failed_item(api: Api, on_error: str, status: str, second: Any) -> None:
    await api.put_flow(names_flow(on_error=on_error))
    task = await run(api, "names", [{"name": "Ada"}, {"nom": "Grace"}, {"name": "Alan"}])
    assert task["status_name"] == status, task["error"]
    assert task["result"]["results"] == [{"value": "Ada"}, second, {"value": "Alan"}]
    shown = await api.json("GET", f"/api/v1/task/{task['id']}", 200, params={"include": "items"})
    assert shown["nodes"]["m"]["items"] == {"total": 3, "succeeded": 2, "failed": 1, "running": 0}
    assert shown["nodes"]["m[1]"]["status"] == "failed"
    assert shown["nodes"]["m[1]"]["error"]["node_id"] == "m[1]"


async def test_under_fail_the_first_failed_item_fails_the_map_and_names_the_item(api: Api) -> None:
    await api.put_flow(names_flow(concurrency=1))
    task = await run(api, "names", [{"name": "Ada"}, {"nom": "Grace"}, {"name": "Alan"}])
    assert task["status_name"] == "failed"
    assert task["error"]["node_id"] == "m" and task["error"]["code"] == "node_failed"
    assert task["error"]["message"].startswith("item 1 failed: pick: no key 'name'")
    shown = await api.json("GET", f"/api/v1/task/{task['id']}", 200, params={"include": "items"})
    assert shown["nodes"]["e"]["status"] == "skipped"
    assert "m[2]" not in shown["nodes"]  # with concurrency 1, the item after the failure never started


async def test_a_thousand_items_leave_the_poll_as_small_as_any(api: Api) -> None:
    people = [{"name": f"p{i}"} for i in range(1000)]
    await api.put_flow(names_flow(concurrency=16))
    task = await run(api, "names", people)
    assert task["status_name"] == "succeeded", task["error"]
    assert len(task["result"]["results"]) == 1000 and task["result"]["results"][999] == {"value": "p999"}
    poll = await api.json("GET", f"/api/v1/task/{task['id']}", 200)
    assert list(poll["nodes"]) == ["s", "m", "e"]
    assert poll["nodes"]["m"]["items"]["succeeded"] == 1000
    history = await api.json("GET", "/api/v1/tasks", 200, params={"include": "nodes"})
    assert list(history["tasks"][0]["nodes"]) == ["s", "m", "e"]
    assert history["tasks"][0]["node_counts"]["succeeded"] == 3
    full = await api.json("GET", f"/api/v1/task/{task['id']}", 200, params={"include": "items"})
    assert len(full["nodes"]) == 1003


def child_flow() -> dict[str, Any]:
    """greet-one: start(name) → template → end: a flow each map item runs as a child task."""
    return {
        "id": "greet-one",
        "nodes": [
            {"id": "in", "type": "start", "settings": {"data": {"name": "nobody"}}},
            {"id": "hello", "type": "pick", "settings": {"path": "name"}},
            {"id": "out", "type": "end"},
        ],
        "edges": [
            {"from": "in", "to": "hello", "input": "value"},
            {"from": "hello", "output": "value", "to": "out", "input": "name"},
        ],
    }


async def test_a_map_over_a_flow_runs_a_child_task_per_item(api: Api) -> None:
    await api.put_flow(child_flow())
    flow = names_flow()
    flow["nodes"][1]["settings"] = {"flow": {"flow_id": "greet-one"}, "concurrency": 2}
    await api.put_flow(flow)
    task = await run(api, "names", PEOPLE[:3])
    assert task["status_name"] == "succeeded", task["error"]
    assert task["result"] == {"results": [{"name": "Ada"}, {"name": "Grace"}, {"name": "Edsger"}]}
    children = await api.json("GET", "/api/v1/tasks", 200, params={"parent_id": str(task["id"])})
    assert len(children["tasks"]) == 3
    assert {c["parent_id"] for c in children["tasks"]} == {task["id"]}
    assert {c["flow_id"] for c in children["tasks"]} == {"greet-one"}
    assert all(c["status_name"] == "succeeded" for c in children["tasks"])
    child = await api.json("GET", f"/api/v1/task/{children['tasks'][-1]['id']}", 200)
    assert child["parent_id"] == task["id"] and child["result"] == {"name": "Ada"}


async def test_a_map_needs_exactly_one_of_node_and_flow(api: Api) -> None:
    flow = names_flow()
    flow["nodes"][1]["settings"]["flow"] = {"flow_id": "greet-one"}
    answer = await api.json("PUT", "/api/v1/flows/names", 422, json=flow)
    assert "exactly one of node" in answer["error"]["message"]


@pytest.mark.parametrize(("item_node", "says"), [
    ({"type": "pikc", "settings": {"path": "name"}}, "nodes.1.settings.node.type: "),
    ({"type": "pick", "settings": {}}, "nodes.1.settings.node.settings.path: "),
])
async def test_loading_checks_the_item_node(api: Api, item_node: dict[str, Any], says: str) -> None:
    answer = await api.json("PUT", "/api/v1/flows/names", 422, json=names_flow(item_node))
    assert says in answer["error"]["message"]


def test_graph_runtime_run_maps_and_shows_the_map_not_its_items(tmp_path: Path) -> None:
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "names.json").write_text(json.dumps(names_flow()))
    result = run_cli("run", "names", "--set", 'm.concurrency=2', "--db", sqlite_url(tmp_path / "x.db"),
                     "--flows", str(flows), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    task = last_json_line(result.stdout)
    assert task["status"] == 3 and task["result"] == {"results": [{"value": p["name"]} for p in PEOPLE]}
    assert list(task["nodes"]) == ["s", "m", "e"] and task["nodes"]["m"]["items"]["succeeded"] == 5
    assert "m[0]" not in result.stdout  # the live table shows the map's row with its count, not 5 item rows


async def test_a_secret_in_the_item_node_reaches_each_item_and_no_output(api: Api) -> None:
    assert (await api.request("PUT", "/api/v1/secrets/SHOP_TOKEN", json={"value": "tok-3f9a1c77e2"})).status == 204
    flow = names_flow({"type": "merge", "settings": {"token": {"$secret": "SHOP_TOKEN"}}})
    await api.put_flow(flow)
    task = await run(api, "names", [{"name": "Ada"}, {"name": "Alan"}])
    assert task["status_name"] == "succeeded", task["error"]
    assert task["result"] == {"results": [{"name": "Ada", "token": "[secret]"}, {"name": "Alan", "token": "[secret]"}]}
    full = await api.json("GET", f"/api/v1/task/{task['id']}", 200, params={"include": "items,outputs"})
    assert "tok-3f9a1c77e2" not in json.dumps(full)


def test_graph_runtime_run_runs_a_map_over_a_child_flow_from_the_flows_directory(tmp_path: Path) -> None:
    flows = tmp_path / "flows"
    flows.mkdir()
    flow = names_flow()
    flow["nodes"][1]["settings"] = {"flow": {"flow_id": "greet-one"}}
    (flows / "names.json").write_text(json.dumps(flow))
    (flows / "greet-one.json").write_text(json.dumps(child_flow()))
    result = run_cli("run", "names", "--db", sqlite_url(tmp_path / "x.db"), "--flows", str(flows), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    task = last_json_line(result.stdout)
    assert task["status"] == 3 and task["result"] == {"results": [{"name": p["name"]} for p in PEOPLE]}
    assert "stored flow greet-one revision 1" in result.stderr
