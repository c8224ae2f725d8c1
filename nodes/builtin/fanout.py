"""Fan-out node types (SPEC §9): ``map`` runs a node or a child flow per item, ``subflow`` runs
another flow as a child task.

Both are ordinary node types to the executor: their item runs and child tasks go through
``ctx.items`` and ``ctx.children`` (:mod:`nodes.fanout`), which the executor records durably, so
a resumed map does not run again the items that already succeeded. Their cost is what their
items and children cost, reported as ``credits`` usage.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from nodes import contract, errors
from nodes.contract import CostModel, NodeType, RunContext
from nodes.fanout import ChildOutcome, ChildRequest, ForwardedError, ItemRuns

if TYPE_CHECKING:
    from nodes.registry import Registry

_T = TypeVar("_T")

MAX_ITEMS = 10_000
"""Items one map may have: each is a stored node run (or a child task)."""

_PASSED_ON = CostModel(per_unit={"credits": 1.0})  # items' and children's costs, already priced


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class ItemNode(BaseModel):
    """The node each item runs as."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(min_length=1, description="The node type, e.g. image.resize.")
    settings: dict[str, Any] = Field(default_factory=dict, description="Its settings; the item is added as item_input.")


class FlowCall(BaseModel):
    """A flow run as a child task; unset ids take the flow's defaults."""

    model_config = ConfigDict(extra="forbid")

    flow_id: str = Field(min_length=1, max_length=64)
    start_node_id: str | None = None
    end_node_id: str | None = None
    result_node_id: str | None = None
    node_settings: dict[str, dict[str, Any]] = Field(default_factory=dict)
    revision: int | None = Field(None, ge=1, description="A revision of the flow; unset: its latest.")

    def request(self, data: dict[str, Any] | None = None) -> ChildRequest:
        return ChildRequest(self.flow_id, self.start_node_id, self.end_node_id, self.result_node_id,
                            self.node_settings, self.revision, data)


class Map(NodeType):
    """Runs a node, or a child flow, once per item of a list."""

    type = "map"
    description = (
        "Runs node ({type, settings}: the item is given as the input named item_input) or flow "
        "({flow_id, start_node_id, end_node_id, result_node_id}: a child task per item, the item "
        "as the start node's data — an object as it is, anything else as {item}) once per item of "
        "items, at most concurrency at a time. Outputs {results} in item order. on_error: fail "
        "(the first failure fails the map), skip (a failed item's result is null) or collect (it "
        "is {error: {code, message}}). Item runs show in the task as map[0], map[1]…; a resumed "
        "task does not run again the items that succeeded."
    )
    cost = _PASSED_ON
    fans_out = True

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")

        items: list[Any] = Field(max_length=MAX_ITEMS, description="The list to map over.")
        node: ItemNode | None = Field(None, description="The node each item runs as.")
        flow: FlowCall | None = Field(None, description="The flow each item runs as a child task.")
        item_input: str = Field("item", min_length=1, description="The input of node the item is given as.")
        concurrency: int = Field(4, ge=1, le=256, description="Items run at the same time.")
        on_error: Literal["fail", "skip", "collect"] = "fail"

        @pydantic.model_validator(mode="before")
        @classmethod
        def _node_or_flow(cls, values: Any) -> Any:
            # Before the fields: a flow's check runs while items is still missing (fed by an edge).
            if isinstance(values, dict) and (values.get("node") is None) == (values.get("flow") is None):
                raise ValueError("give exactly one of node (a node per item) and flow (a child task per item)")
            return values

    class Output(BaseModel):
        results: list[Any]

    @classmethod
    def nested_problems(cls, settings: Mapping[str, Any], registry: Registry) -> list[str]:
        """The item node's type must exist and its settings be valid (the item fills item_input)."""
        node = settings.get("node")
        if not isinstance(node, dict) or not isinstance(node.get("type"), str):
            return []
        try:
            item_type = registry.get(node["type"])
            item_input = settings.get("item_input", "item")
            contract.validate_params(item_type, contract.split_policy(node.get("settings") or {}, item_type.policy)[1],
                                     frozenset({item_input}), unresolved=True)
        except errors.GraphRuntimeError as exc:
            where = "node.type" if isinstance(exc, errors.UnknownNodeType) else "node.settings" + (
                f".{exc.field}" if exc.field else "")
            return [f"{where}: {exc.message}"]
        return []

    async def run(self, params: Params, ctx: RunContext) -> Output:
        """Run every item, ``concurrency`` at a time; see the description for ``on_error``.

        Raises:
            ForwardedError: under ``fail``, the first item's failure (its code; the message names the item).
        """
        runs = _needs(ctx.items, "item runs")
        runs.begin(len(params.items))
        results: list[Any] = [None] * len(params.items)
        costs = [0.0] * len(params.items)
        gate = asyncio.Semaphore(params.concurrency)

        async def one(index: int, item: Any) -> None:
            async with gate:
                try:
                    results[index], costs[index] = await _run_item(runs, params, index, item)
                except errors.GraphRuntimeError as exc:
                    if params.on_error == "fail":
                        raise ForwardedError(exc.code, f"item {index} failed: {exc.message}") from exc
                    results[index] = None if params.on_error == "skip" else {
                        "error": {"code": exc.code, "message": exc.message}}

        try:
            async with asyncio.TaskGroup() as group:  # the first failure cancels the items still running
                for index, item in enumerate(params.items):
                    group.create_task(one(index, item))
        except* ForwardedError as failed:
            raise failed.exceptions[0] from None
        ctx.report_usage("credits", sum(costs))
        return self.Output(results=results)


async def _run_item(runs: ItemRuns, params: Map.Params, index: int, item: Any) -> tuple[Any, float]:
    if params.node is not None:
        return await runs.run_node(index, params.node.type, {**params.node.settings, params.item_input: item})
    assert params.flow is not None
    outcome = await runs.run_flow(index, params.flow.request(item if isinstance(item, dict) else {"item": item}))
    return _result(outcome), outcome.cost


class Subflow(NodeType):
    """Runs another flow as a child task and outputs its result."""

    type = "subflow"
    description = (
        "Runs flow_id (from start_node_id to end_node_id, its defaults when unset, with "
        "node_settings, at revision or its latest) as a child task whose parent_id is this task. "
        "Outputs the child's result; the child's failure is this node's, with the child's error. "
        "Cancelling this task cancels the child."
    )
    cost = _PASSED_ON
    fans_out = True

    class Params(FlowCall):
        pass

    class Output(_Open):
        """The child task's result."""

    async def run(self, params: Params, ctx: RunContext) -> Output:
        """Run the child to its end.

        Raises:
            ForwardedError: the child did not succeed (its error's code and message).
        """
        outcome = await _needs(ctx.children, "child tasks").run("", params.request())
        ctx.report_usage("credits", outcome.cost)
        return self.Output.model_validate(_result(outcome))


def _result(outcome: ChildOutcome) -> Any:
    if outcome.succeeded:
        return outcome.result
    error = outcome.error or {}
    where = f" (node {error['node_id']})" if error.get("node_id") else ""
    raise ForwardedError(str(error.get("code") or "node_failed"),
                         f"child task {outcome.task_id} failed{where}: {error.get('message') or 'no reason given'}")


def _needs(capability: _T | None, what: str) -> _T:
    if capability is None:
        raise errors.NodeFailed(f"this runtime cannot run {what} here")
    return capability
