"""``switch`` and ``join: any`` in the executor, on a real SQLite repository (SPEC §9)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from graph_runtime.errors import FlowInvalid
from graph_runtime.executor import Executor
from graph_runtime.flow import Flow, parse
from graph_runtime.models import NodeRun, NodeStatus, Task, TaskRequest, TaskStatus
from graph_runtime.scheduler import Scheduler
from graph_runtime.validation import validate
from nodes.builtin.control import same_value
from storage import engine as storage_engine
from storage.repository import Repository
from tests.support import Echo, FlowBuilder, eventually, registry_with_test_types

SKIPPED, SUCCEEDED = NodeStatus.SKIPPED, NodeStatus.SUCCEEDED


def branch_flow(flow_id: str = "branch", *, join: str | None = "any", default: str | None = None) -> Flow:
    """s → sw; sw -a→ A → A2, sw -b→ B → B2; A2, B2 → j (the merge) → e."""
    return validate(parse(branch_data(flow_id, join=join, default=default)), registry_with_test_types())


def branch_data(flow_id: str = "branch", *, join: str | None = "any", default: str | None = None) -> dict[str, Any]:
    switch: dict[str, Any] = {"cases": {"a": "a", "b": "b"}}
    if default is not None:
        switch["default"] = default
    builder = (FlowBuilder(flow_id).node("s", "start", data={"kind": "a"}).node("sw", "switch", **switch)
               .node("A", "test.echo").node("A2", "test.echo").node("B", "test.echo").node("B2", "test.echo")
               .node("j", "merge").node("e", "end")
               .edge("s", "sw", output="kind", input="value").edge("A", "A2").edge("B", "B2")
               .edge("A2", "j").edge("B2", "j").edge("j", "e"))
    data = builder.build()
    data["edges"] += [{"from": "sw", "to": "A", "when": "a"}, {"from": "sw", "to": "B", "when": "b"}]
    if join is not None:
        next(n for n in data["nodes"] if n["id"] == "j")["join"] = join
    return data


@pytest.fixture
async def repo(db_url: str) -> AsyncIterator[Repository]:
    engine = storage_engine.create_engine(db_url)
    repository = Repository(engine)
    yield repository
    await storage_engine.dispose(engine)


async def run(repo: Repository, flow: Flow, kind: Any, *, end: str = "e") -> Task:
    await repo.save_flow(flow)
    request = TaskRequest("s", end, end, node_settings={"s": {"data": {"kind": kind}}})
    task, _ = await repo.create_task(flow.id, 1, request)
    claimed = await repo.claim_task(task.id, "w")
    assert claimed is not None
    await Executor(repo, registry_with_test_types()).execute(claimed)
    return await repo.get_task(task.id)


def statuses(task: Task) -> dict[str, NodeStatus]:
    return {node_id: r.status for node_id, r in task.nodes.items()}


@pytest.mark.parametrize(("kind", "taken", "untaken"), [("a", "A", "B"), ("b", "B", "A")])
async def test_each_case_runs_its_branch_and_skips_the_other(repo: Repository, kind: str, taken: str,
                                                             untaken: str) -> None:
    done = await run(repo, branch_flow(), kind)
    assert done.status is TaskStatus.SUCCEEDED and done.error is None
    assert done.nodes["sw"].output == {"case": kind}
    assert statuses(done) == {"s": SUCCEEDED, "sw": SUCCEEDED, taken: SUCCEEDED, f"{taken}2": SUCCEEDED,
                              untaken: SKIPPED, f"{untaken}2": SKIPPED, "j": SUCCEEDED, "e": SUCCEEDED}
    assert sorted(node for node, _ in Echo.runs) == [taken, f"{taken}2"], "a skipped node never runs"
    # join: any merges only what the taken branch gave; the control edge carries no value.
    assert done.result == {"j": {taken: {}}}


async def test_no_match_takes_the_default_case(repo: Repository) -> None:
    done = await run(repo, branch_flow(default="b"), "something else")
    assert done.status is TaskStatus.SUCCEEDED
    assert done.nodes["sw"].output == {"case": "b"} and done.nodes["A"].status is SKIPPED


async def test_no_match_and_no_default_fails_naming_the_value(repo: Repository) -> None:
    done = await run(repo, branch_flow(), "zebra")
    assert done.status is TaskStatus.FAILED and done.error is not None
    assert done.error.code == "node_failed" and done.error.node_id == "sw"
    assert "'zebra'" in done.error.message
    assert done.nodes["A"].status is SKIPPED and done.nodes["B"].status is SKIPPED and not Echo.runs


async def test_a_plain_join_after_a_branch_is_skipped_and_the_task_succeeds_with_a_null_result(
        repo: Repository) -> None:
    done = await run(repo, branch_flow("plain", join=None), "a")
    assert done.status is TaskStatus.SUCCEEDED and done.error is None
    # Skips propagate: B → B2 → j (join: all) → e, transitively.
    assert statuses(done) == {"s": SUCCEEDED, "sw": SUCCEEDED, "A": SUCCEEDED, "A2": SUCCEEDED,
                              "B": SKIPPED, "B2": SKIPPED, "j": SKIPPED, "e": SKIPPED}
    assert done.result is None, "the result node was skipped: the task succeeds with result null"


async def test_a_value_edge_from_a_switch_feeds_its_case(repo: Repository) -> None:
    data = (FlowBuilder("fed").node("s", "start", data={"kind": 2}).node("sw", "switch", cases={"two": 2, "one": 1})
            .node("e", "end").edge("s", "sw", output="kind", input="value").build())
    data["edges"].append({"from": "sw", "to": "e", "when": "two", "output": "case", "input": "picked"})
    done = await run(repo, validate(parse(data), registry_with_test_types()), 2)
    assert done.status is TaskStatus.SUCCEEDED and done.result == {"picked": "two"}


async def test_resume_after_a_crash_mid_branch_decides_the_skips_again(repo: Repository) -> None:
    flow = branch_flow()
    await repo.save_flow(flow)
    request = TaskRequest("s", "e", "e", node_settings={"s": {"data": {"kind": "b"}}})
    task, _ = await repo.create_task(flow.id, 1, request)
    claimed = await repo.claim_task(task.id, "a-worker-that-dies", lease_s=0.0)
    assert claimed is not None
    now = datetime.now(UTC)
    # A process killed while B ran: s and the switch done (case b), B running on its first try.
    await repo.save_node_runs(task.id, [
        NodeRun("s", SUCCEEDED, now, now, 0.001, 0.0, 1, None, {"kind": "b"}),
        NodeRun("sw", SUCCEEDED, now, now, 0.001, 0.0, 1, None, {"case": "b"}),
        NodeRun("B", NodeStatus.RUNNING, now, None, None, None, 1, None, None),
    ])
    scheduler = Scheduler(repo, Executor(repo, registry_with_test_types()), poll_interval_s=0.05)
    assert await scheduler.start() == 1, "the lapsed task is resumed"
    try:
        done = await eventually(lambda: _ended(repo, task.id))
    finally:
        await scheduler.stop()
    assert done.status is TaskStatus.SUCCEEDED
    assert [node for node, _ in Echo.runs] == ["B", "B2"], "only the taken branch's unfinished nodes run"
    assert done.nodes["A"].status is SKIPPED and done.nodes["A2"].status is SKIPPED
    assert done.nodes["B"].attempts == 2 and done.nodes["sw"].attempts == 1
    assert done.result == {"j": {"B": {}}}


async def test_the_skips_are_recorded_while_the_taken_branch_still_runs(repo: Repository) -> None:
    data = (FlowBuilder("slow").node("s", "start", data={"kind": "b"}).node("sw", "switch", cases={"a": "a", "b": "b"})
            .node("A", "test.echo").node("B", "test.sleep", seconds=0.5).node("e", "end", join="any")
            .edge("s", "sw", output="kind", input="value").edge("A", "e").edge("B", "e").build())
    data["edges"] += [{"from": "sw", "to": "A", "when": "a"}, {"from": "sw", "to": "B", "when": "b"}]
    data["nodes"][-1]["join"] = data["nodes"][-1]["settings"].pop("join")
    flow = validate(parse(data), registry_with_test_types())
    await repo.save_flow(flow)
    task, _ = await repo.create_task(flow.id, 1, TaskRequest("s", "e", "e"))
    claimed = await repo.claim_task(task.id, "w")
    assert claimed is not None
    running = asyncio.ensure_future(Executor(repo, registry_with_test_types()).execute(claimed))
    try:
        seen = await eventually(lambda: _skipped_while_running(repo, task.id), timeout=5)
        assert seen.nodes["B"].status is NodeStatus.RUNNING and seen.status is TaskStatus.RUNNING
    finally:
        await running
    done = await repo.get_task(task.id)
    assert done.status is TaskStatus.SUCCEEDED and done.nodes["A"].status is SKIPPED


async def _skipped_while_running(repo: Repository, task_id: int) -> Task | None:
    task = await repo.get_task(task_id)
    return task if "A" in task.nodes and task.nodes["A"].status is SKIPPED and task.status is TaskStatus.RUNNING else None


async def _ended(repo: Repository, task_id: int) -> Task | None:
    task = await repo.get_task(task_id)
    return task if task.status.ended else None


def test_json_equality_keeps_booleans_apart_from_numbers() -> None:
    assert same_value(1, 1.0) and same_value({"a": [1, "x"]}, {"a": [1.0, "x"]})
    assert not same_value(True, 1) and not same_value(0, False) and not same_value([1], {"1": 1})
    assert same_value(None, None) and not same_value(None, 0)


def _problems(data: dict[str, Any]) -> str:
    with pytest.raises(FlowInvalid) as info:
        validate(parse(data), registry_with_test_types())
    return "\n".join(info.value.problems)


def test_load_refuses_a_when_naming_no_case_or_not_from_a_switch_and_a_lonely_join_any() -> None:
    data = branch_flow().definition()
    data["edges"] += [{"from": "sw", "to": "e", "when": "c"}, {"from": "A", "to": "B2", "when": "a"}]
    next(n for n in data["nodes"] if n["id"] == "e")["join"] = "any"
    text = _problems(data)
    assert "edges.8.when: switch 'sw' has no case 'c' (its cases: a, b)" in text
    assert "edges.9.when: node 'A' (test.echo) is not a switch" in text
    assert "join" not in text, "e has two predecessors (j and sw)"
    lonely = branch_flow().definition()
    next(n for n in lonely["nodes"] if n["id"] == "A2")["join"] = "any"
    assert "nodes.3.join: 'any' needs two predecessors or more to choose from (node 'A2' has 1)" in _problems(lonely)


def test_load_refuses_a_default_that_is_no_case_and_a_bad_join() -> None:
    assert "nodes.1.settings.default: 'c' is not one of the cases (a, b)" in _problems(branch_data(default="c"))
    with pytest.raises(FlowInvalid, match=r"nodes\.6\.join"):
        parse(branch_data(join="some"))


def test_a_control_edge_needs_no_input_on_its_target_and_a_fed_cases_is_checked_at_run() -> None:
    # template has fixed parameters: a control edge (when, no input/output) feeds none of them.
    data = (FlowBuilder("ctl").node("s", "start", data={"k": 1, "cases": {"x": 1}}).node("sw", "switch")
            .node("t", "template", template="hi").edge("s", "sw", output="k", input="value")
            .edge("s", "sw", output="cases", input="cases").build())
    data["edges"].append({"from": "sw", "to": "t", "when": "anything"})
    flow = validate(parse(data), registry_with_test_types())
    assert not flow.edges[2].carries_value and flow.definition()["edges"][2]["when"] == "anything"


def test_a_flow_without_branches_keeps_its_digest() -> None:
    # join/when default to absent, so definitions stored before this feature hash the same.
    plain = FlowBuilder("p").node("s", "start").node("e", "end").edge("s", "e").build()
    assert "join" not in parse(plain).definition()["nodes"][0]
    assert "when" not in parse(plain).definition()["edges"][0]
