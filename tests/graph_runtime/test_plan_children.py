"""The dry run's cost of ``map`` and ``subflow`` nodes (SPEC §9): items × the item's cost, child flows
planned in turn (with a depth bound), ``max`` None when nothing bounds it before the run."""

from __future__ import annotations

import time
from typing import Any

import pytest

from graph_runtime import errors, plan, plan_cost, selection
from graph_runtime.flow import Flow, parse
from graph_runtime.models import TaskRequest
from tests.support import FlowBuilder, registry_with_test_types

REGISTRY = registry_with_test_types()
ECHO = {"type": "test.echo", "settings": {}}  # 0.5 a run
# Two echoes: 1.0 a run of the child flow.
CHILD = (FlowBuilder("child").node("cs", "start").node("c1", "test.echo").node("c2", "test.echo").node("ce", "end")
         .edge("cs", "c1").edge("c1", "c2").edge("c2", "ce").build())


def around(node_id: str, node_type: str, /, **settings: Any) -> dict[str, Any]:
    """Flow ``f``: start → end ← ``node_id``."""
    return (FlowBuilder("f").node("s", "start").node(node_id, node_type, **settings)
            .node("e", "end").edge("s", "e", input="s").edge(node_id, "e", input=node_id).build())


async def dry(definition: dict[str, Any], *others: dict[str, Any], start: str = "s", end: str = "e",
              **given: Any) -> plan.DryRun:
    stored = {flow.id: flow for flow in map(parse, (definition, *others))}
    calls.clear()

    async def load_flow(flow_id: str, revision: int | None) -> Flow:
        calls.append(flow_id)
        if flow_id not in stored:
            raise errors.FlowNotFound(f"no flow {flow_id!r}")
        return stored[flow_id]

    chosen = selection.plan(stored[definition["id"]], REGISTRY, TaskRequest(start, end, end, **given))
    return await plan.dry_run(chosen, REGISTRY, load_flow=load_flow)


calls: list[str] = []


async def test_a_map_over_known_items_costs_each_items_node() -> None:
    run = await dry(around("m", "map", items=[1, 2, 3], node=ECHO))
    assert run.estimated_cost == plan_cost.CostRange(1.5, 1.5)
    slow = await dry(around("m", "map", items=["a", "b"], node={"type": "test.sleep", "settings": {"timeout_s": 2}}))
    assert slow.estimated_cost == plan_cost.CostRange(0.0, 2 * 2 * 1.0)  # per_second × timeout, per item
    assert (await dry(around("m", "map", items=[], node=ECHO))).estimated_cost == plan_cost.CostRange(0.0, 0.0)


async def test_items_made_by_an_upstream_node_leave_max_unknown() -> None:
    flow = (FlowBuilder().node("s", "start", data={"list": [1, 2]}).node("echo", "test.echo")
            .node("m", "map", node=ECHO).node("e", "end").edge("s", "echo").edge("s", "m", output="list", input="items")
            .edge("echo", "e", input="echo").edge("m", "e", input="m").build())
    run = await dry(flow)
    assert run.estimated_cost == plan_cost.CostRange(0.5, None)  # the echo; the map adds 0 to min
    assert run.as_json()["estimated_cost"] == {"min": 0.5, "max": None}


async def test_a_map_over_a_flow_plans_the_child_once_and_counts_it_per_item() -> None:
    run = await dry(around("m", "map", items=[{"x": 1}, {"x": 2}, {"x": 3}], flow={"flow_id": "child"}), CHILD)
    assert run.estimated_cost == plan_cost.CostRange(3.0, 3.0)
    assert calls == ["child"]


async def test_a_subflow_adds_its_childs_run_set() -> None:
    assert (await dry(around("sub", "subflow", flow_id="child"), CHILD)).estimated_cost == plan_cost.CostRange(1.0, 1.0)
    # Only the child's selection counts: from c2 to its end, one echo (c1's output given in node_settings).
    part = around("sub", "subflow", flow_id="child", start_node_id="c2", node_settings={"c2": {"c1": {}}})
    assert (await dry(part, CHILD)).estimated_cost == plan_cost.CostRange(0.5, 0.5)


async def test_a_child_flow_that_cannot_be_read_is_unbounded() -> None:
    run = await dry(around("sub", "subflow", flow_id="nowhere"))
    assert run.estimated_cost == plan_cost.CostRange(0.0, None)


async def test_a_flow_calling_itself_stops_at_the_depth_bound() -> None:
    flow = (FlowBuilder("loop").node("s", "start").node("echo", "test.echo").node("again", "subflow", flow_id="loop")
            .node("e", "end").edge("s", "echo").edge("echo", "again").edge("again", "e").build())
    began = time.perf_counter()
    run = await dry(flow)
    assert time.perf_counter() - began < 1.0
    assert run.estimated_cost.max is None
    assert run.estimated_cost.min == pytest.approx(0.5 * (1 + plan_cost.MAX_CHILD_DEPTH))
    assert len(calls) == plan_cost.MAX_CHILD_DEPTH
