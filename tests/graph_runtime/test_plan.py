"""The dry run's levels and cost math, on a checked selection (no server, no database)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from graph_runtime import plan, plan_cost, selection
from graph_runtime.flow import parse, read_file
from graph_runtime.models import TaskRequest
from tests.support import FlowBuilder, registry_with_test_types

SAMPLES = Path(__file__).resolve().parents[2] / "sample_flows"
REGISTRY = registry_with_test_types()


async def dry(flow_data: dict[str, Any] | Path, start: str = "s", end: str = "e", settings: dict[str, Any] | None = None,
        prices: dict[str, dict[str, float]] | None = None) -> plan.DryRun:
    flow = read_file(flow_data) if isinstance(flow_data, Path) else parse(flow_data)
    chosen = selection.plan(flow, REGISTRY, TaskRequest(start, end, end, node_settings=settings or {}))
    return await plan.dry_run(chosen, REGISTRY, prices)


async def test_fan_out_fan_in_has_three_levels_between_start_and_end() -> None:
    run = await dry(SAMPLES / "fan-out-fan-in.yaml", "start", "end")
    assert run.levels == (("start",), ("resize", "transcribe", "thumbnail"), ("join",), ("end",))
    assert set(run.run_set) == {"start", "resize", "transcribe", "thumbnail", "join", "end"}
    assert run.missing_inputs == () and run.cached == ()


async def test_levels_keep_the_flows_order_and_only_the_run_set() -> None:
    flow = (FlowBuilder().node("s", "start").node("z", "test.echo").node("a", "test.echo").node("e", "end")
            .node("after", "test.echo").edge("s", "z").edge("s", "a").edge("z", "e").edge("a", "e")
            .edge("e", "after").build())
    run = await dry(flow)
    assert run.levels == (("s",), ("z", "a"), ("e",))
    assert run.as_json()["levels"] == [["s"], ["z", "a"], ["e"]]


async def test_min_sums_per_run_and_max_adds_per_second_times_the_timeout() -> None:
    flow = (FlowBuilder().node("s", "start").node("echo1", "test.echo").node("echo2", "test.echo")
            .node("slow", "test.sleep", timeout_s=5).node("open", "test.sleep").node("e", "end")
            .edge("s", "echo1").edge("echo1", "echo2").edge("echo2", "slow").edge("slow", "open").edge("open", "e")
            .build())
    cost = (await dry(flow)).estimated_cost
    assert cost.min == 1.0  # two echoes at 0.5 a run
    assert cost.max == 1.0 + 5 * 1.0 + plan_cost.DEFAULT_RUN_SECONDS * 1.0  # no timeout: the documented default
    # A request's timeout_s overrides the flow's, as it would at run time.
    assert (await dry(flow, settings={"open": {"timeout_s": 2}})).estimated_cost.max == 1.0 + 5 + 2


def chat_flow(**chat: Any) -> dict[str, Any]:
    return (FlowBuilder().node("s", "start", data={"question": "why?"}).node("ask", "llm.chat", **chat)
            .node("e", "end").edge("s", "ask", output="question", input="prompt").edge("ask", "e").build())


async def test_llm_max_prices_max_tokens_of_output_and_an_input_estimate() -> None:
    prices = {"gpt-x": {"input": 2.0, "output": 10.0}}
    run = await dry(chat_flow(model="gpt-x", max_tokens=500, system="x" * 400), prices=prices)
    input_tokens = 400 / plan_cost.CHARS_PER_TOKEN + plan_cost.EDGE_INPUT_TOKENS  # the system text, and the prompt's edge
    assert run.estimated_cost.min == 0.0
    assert run.estimated_cost.max == pytest.approx((input_tokens * 2.0 + 500 * 10.0) / 1_000_000)


async def test_the_nodes_own_prices_win_and_unknown_models_count_zero() -> None:
    own = await dry(chat_flow(model="gpt-x", max_tokens=1000, prices={"input": 0, "output": 1000.0}),
              prices={"gpt-x": {"input": 2.0, "output": 10.0}})
    assert own.estimated_cost.max == pytest.approx(1.0)
    assert (await dry(chat_flow(model="unpriced", max_tokens=1000), prices={})).estimated_cost.max == 0.0
    no_max = await dry(chat_flow(model="gpt-x"), prices={"gpt-x": {"input": 0.0, "output": 10.0}})
    assert no_max.estimated_cost.max == 0.0  # no max_tokens: output counts 0


async def test_plan_of_a_thousand_node_flow_has_its_levels_and_cost() -> None:
    # How fast it is: `python -m bench --only plan` (same-run references), not a timed assertion
    # that a busy machine fails.
    builder = FlowBuilder().node("s", "start").node("e", "end")
    for i in range(998):
        builder.node(f"n{i}", "test.echo").edge("s", f"n{i}").edge(f"n{i}", "e", input=f"v{i}")
    flow = parse(builder.build())
    chosen = selection.plan(flow, REGISTRY, TaskRequest("s", "e", "e"))
    run = await plan.dry_run(chosen, REGISTRY)
    assert [len(level) for level in run.levels] == [1, 998, 1]
    assert run.estimated_cost.min == 499.0
