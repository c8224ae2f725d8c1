"""The dry run's cost range (SPEC §9 "Plan"): each node type's :class:`CostModel`, a ``map``'s items
and the child flows a ``map`` or ``subflow`` would start.

Nothing runs and nothing is written; a child flow is read through the loader the caller gives.
"""

from __future__ import annotations

import graphlib
import math
from collections.abc import Awaitable, Callable, Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any

from graph_runtime import selection
from graph_runtime.flow import Edge, Flow
from graph_runtime.models import TaskRequest
from nodes import contract
from nodes import errors as node_errors
from nodes.registry import Registry

DEFAULT_RUN_SECONDS = 60.0
"""The seconds a ``per_second``-priced node is assumed to run at most when neither its settings nor
its type give a ``timeout_s`` (an attempt is charged only when it succeeds, so one timeout is the bound)."""

CHARS_PER_TOKEN = 4
"""The input estimate of an ``llm.*`` node: the text in its settings, at about 4 characters a token."""

EDGE_INPUT_TOKENS = 1000
"""…plus this many tokens for each input an edge delivers (its text is not known before the run)."""

MAX_CHILD_DEPTH = 8
"""How deep a plan follows ``subflow``/``map`` child flows. Deeper (a flow that calls itself), the
rest is not counted in ``min`` and ``max`` is unknown (None)."""

PER_MILLION = 1_000_000  # LLM prices are credits per 1M tokens (nodes.builtin.llm.client.TokenPrices)
_TEXT_KEYS = ("prompt", "system", "messages", "input")  # where an llm.* node's input text sits
MAP, SUBFLOW = "map", "subflow"  # the node types that start more work than themselves (SPEC §9)

LoadFlow = Callable[[str, int | None], Awaitable[Flow]]
"""The flow ``flow_id`` at ``revision`` (None: the latest); raises ``errors.NotFound``."""


@dataclass(frozen=True)
class CostRange:
    """Credits a run may cost: ``min`` if every node runs as cheaply as it can, ``max`` at worst;
    ``max`` is None when nothing bounds it before the run (a ``map`` over items an upstream node makes)."""

    min: float
    max: float | None

    def times(self, count: int) -> CostRange:
        return CostRange(self.min * count, None if self.max is None else self.max * count)


FREE = CostRange(0.0, 0.0)
UNKNOWN = CostRange(0.0, None)


def estimate(chosen: selection.Plan, registry: Registry, prices: Mapping[str, Mapping[str, float]], *,
             cached: AbstractSet[str] = frozenset(), children: Mapping[str, CostRange] | None = None) -> CostRange:
    """The cost range from each node type's :class:`CostModel`.

    ``min`` sums the ``per_run`` of the nodes that run whatever a ``switch`` decides (a node behind
    a ``when`` edge may be skipped, and so may what depends on it, unless a ``join: any`` has a
    sure predecessor); ``max`` counts every node.
    ``max`` adds ``per_second`` × the node's timeout (:data:`DEFAULT_RUN_SECONDS` when it has none)
    and, for ``llm.*`` types, the tokens priced by the node's ``prices`` or ``prices[model]``:
    the input estimate (:data:`CHARS_PER_TOKEN`, :data:`EDGE_INPUT_TOKENS`) plus ``max_tokens`` of
    output. Other usage units, a model with no price and an unset ``max_tokens`` count 0.
    ``cached`` nodes cost nothing; ``children`` is what each ``map``/``subflow`` node's items or
    child tasks add (:func:`child_costs`).
    """
    shape = run_set_shape(chosen, registry)
    low = high = shape.fixed_total
    for node_id in shape.fixed.keys() & (cached | shape.optional):  # each taken out of what counted it
        high -= shape.fixed[node_id] if node_id in cached else 0.0
        low -= shape.fixed[node_id]
    unbounded = False
    children = children or {}
    for node_id in shape.variable:
        if node_id in cached:
            continue
        node_type = registry.get(chosen.flow.node(node_id).type)
        own_low, own_high = node_cost(node_type, chosen.settings[node_id], len(chosen.inbound[node_id]), prices)
        child = children.get(node_id)
        if child is not None:
            own_low += child.min
            unbounded = unbounded or child.max is None
            own_high += child.max or 0.0
        low += 0.0 if node_id in shape.optional else own_low
        high += own_high
    return CostRange(round(low, 9), None if unbounded else round(high, 9))


@dataclass(frozen=True)
class RunSetShape:
    """What a run set's cost needs that no request changes, kept per flow revision and run set: a
    1,000-node plan then loops only over the nodes whose cost its settings decide.

    Attributes:
        fixed: ``per_run`` of each node whose range no setting changes (no ``per_second``, not
            ``llm.*``, ``map`` or ``subflow``): its min and its max.
        fixed_total: their sum.
        variable: the other nodes, in run order.
        optional: :func:`maybe_skipped`.
        fans_out: the ``map`` and ``subflow`` nodes.
    """

    fixed: Mapping[str, float]
    fixed_total: float
    variable: tuple[str, ...]
    optional: frozenset[str]
    fans_out: tuple[str, ...]


_SHAPES_PER_FLOW = 64


def run_set_shape(chosen: selection.Plan, registry: Registry) -> RunSetShape:
    key = ("plan-shape", registry, chosen.order)
    found = chosen.flow.memo.get(key)
    if found is not None:
        return found  # type: ignore[no-any-return]
    fixed: dict[str, float] = {}
    variable, fans_out = [], []
    for node_id in chosen.order:
        node_type = registry.get(chosen.flow.node(node_id).type)
        if node_type.type in (MAP, SUBFLOW):
            fans_out.append(node_id)
        if node_type.cost.per_second or node_type.type.startswith("llm.") or node_type.type in (MAP, SUBFLOW):
            variable.append(node_id)
        else:
            fixed[node_id] = node_type.cost.per_run
    found = RunSetShape(fixed, sum(fixed.values()), tuple(variable), maybe_skipped(chosen), tuple(fans_out))
    if len(chosen.flow.memo) < _SHAPES_PER_FLOW:
        chosen.flow.memo[key] = found
    return found


def node_cost(node_type: type[contract.NodeType], settings: Mapping[str, Any], edge_inputs: int,
              prices: Mapping[str, Mapping[str, float]]) -> tuple[float, float]:
    """One node's own ``(min, max)``: ``per_run``; at most also ``per_second`` × its timeout and its tokens."""
    cost = node_type.cost
    high = cost.per_run + (cost.per_second * _seconds(node_type, settings) if cost.per_second else 0.0)
    if node_type.type.startswith("llm."):
        high += _token_credits(settings, prices, edge_inputs) * cost.per_unit.get("token_credits", 0.0)
    return cost.per_run, high


def maybe_skipped(chosen: selection.Plan) -> frozenset[str]:
    """The run-set nodes a switch may leave skipped (the executor's rule, decided ahead for every case)."""
    if not any(edge.when is not None for edges in chosen.inbound.values() for edge in edges):
        return frozenset()  # no branch in the run set: the common case costs one pass
    optional: set[str] = set()
    for node_id in chosen.order:
        sure = {edge.source for edge in chosen.inbound[node_id] if edge.when is None and edge.source not in optional}
        preds = chosen.predecessors[node_id]
        if chosen.flow.node(node_id).joins_any:
            if preds and not sure:
                optional.add(node_id)
        elif len(sure) < len(preds):
            optional.add(node_id)
    return frozenset(optional)


async def child_costs(chosen: selection.Plan, registry: Registry, prices: Mapping[str, Mapping[str, float]],
                      load_flow: LoadFlow | None, depth: int = 0) -> dict[str, CostRange]:
    """What each ``map`` and ``subflow`` node of the run set adds to its own cost.

    A ``map`` with ``node: {type, settings}`` adds that node's range per item; with ``flow`` (or a
    ``subflow``) the child flow's run set is planned (its own children too, :data:`MAX_CHILD_DEPTH`
    levels deep) and added per item (once for a ``subflow``). When the items are not known before
    the run (an edge feeds ``items``), ``min`` adds 0 and ``max`` is None; so when the child flow
    cannot be read or selected (the node would fail), or the depth bound is reached.
    """
    found: dict[str, CostRange] = {}
    children = _Children(registry, prices, load_flow, depth)
    for node_id in run_set_shape(chosen, registry).fans_out:
        kind = chosen.flow.node(node_id).type
        settings = chosen.settings[node_id]
        fed = {edge.input_name for edge in chosen.inbound[node_id] if edge.carries_value}
        if kind == SUBFLOW:
            found[node_id] = UNKNOWN if "flow_id" in fed else await children.flow_cost(settings)
        else:
            found[node_id] = await children.map_cost(settings, fed)
    return found


@dataclass
class _Children:
    """Child plans of one dry run, each child selection planned once however many nodes start it."""

    registry: Registry
    prices: Mapping[str, Mapping[str, float]]
    load_flow: LoadFlow | None
    depth: int
    _planned: dict[str, CostRange] | None = None

    async def map_cost(self, settings: Mapping[str, Any], fed: AbstractSet[str]) -> CostRange:
        items = settings.get("items")
        if "items" in fed or not isinstance(items, list) or fed & {"node", "flow"}:
            return UNKNOWN
        if not items:
            return FREE
        spec = settings.get("flow") if settings.get("node") is None else None
        per_item = await self.flow_cost(spec) if isinstance(spec, Mapping) else self.item_node_cost(settings.get("node"))
        return per_item.times(len(items))

    def item_node_cost(self, spec: Any) -> CostRange:
        if not isinstance(spec, Mapping):
            return UNKNOWN
        try:
            node_type = self.registry.get(str(spec.get("type")))
        except node_errors.UnknownNodeType:
            return UNKNOWN  # the map fails before any item runs
        own = spec.get("settings")
        return CostRange(*node_cost(node_type, own if isinstance(own, Mapping) else {}, 1, self.prices))  # the item: an input

    async def flow_cost(self, spec: Mapping[str, Any]) -> CostRange:
        """The range of the child task ``spec`` (``flow_id``, optional node ids, ``node_settings``, ``revision``)."""
        if self.load_flow is None or self.depth >= MAX_CHILD_DEPTH or not isinstance(spec.get("flow_id"), str):
            return UNKNOWN
        key = repr(sorted((k, repr(v)) for k, v in spec.items()))
        planned = self._planned = self._planned if self._planned is not None else {}
        if key not in planned:
            planned[key] = await self._plan_child(spec)
        return planned[key]

    async def _plan_child(self, spec: Mapping[str, Any]) -> CostRange:
        revision, load_flow = spec.get("revision"), self.load_flow
        if load_flow is None:
            return UNKNOWN
        try:
            flow = await load_flow(str(spec["flow_id"]), revision if isinstance(revision, int) else None)
            chosen = child_selection(flow, self.registry, spec)
        except node_errors.GraphRuntimeError:
            return UNKNOWN  # the node fails at run time: nothing to add, but nothing bounds it either
        children = await child_costs(chosen, self.registry, self.prices, self.load_flow, self.depth + 1)
        return estimate(chosen, self.registry, self.prices, children=children)


def child_selection(flow: Flow, registry: Registry, spec: Mapping[str, Any]) -> selection.Plan:
    """The run set a child task of ``flow`` would have, its settings merged but not checked: the
    child's inputs (a map's item, a subflow's upstream values) are not known before the run, and the
    child task checks them when it starts.

    Raises:
        errors.SelectionError: an unknown node id. nodes.errors.UnknownNodeType: a type not installed.
    """
    def given(name: str) -> str | None:
        value = spec.get(name)
        return value if isinstance(value, str) else None

    start, end, result = selection.resolve_ids(flow, given("start_node_id"), given("end_node_id"), given("result_node_id"))
    chosen = selection.run_set(selection.graph_of(flow), start, end)
    inbound: dict[str, list[Edge]] = {n: [] for n in chosen}
    for edge in flow.edges:
        if edge.target in chosen and edge.source in chosen:
            inbound[edge.target].append(edge)
    preds = {n: tuple(sorted({edge.source for edge in edges})) for n, edges in inbound.items()}
    order = tuple(graphlib.TopologicalSorter(preds).static_order())
    succs: dict[str, list[str]] = {n: [] for n in order}
    for node_id in order:
        registry.get(flow.node(node_id).type)
        for pred in preds[node_id]:
            succs[pred].append(node_id)
    overrides = spec.get("node_settings")
    overrides = overrides if isinstance(overrides, Mapping) else {}
    settings = {n: selection.deep_merge(flow.node(n).settings, overrides.get(n) or {}) for n in order}
    return selection.Plan(flow, TaskRequest(start, end, result), order, preds,
                          {n: tuple(v) for n, v in succs.items()}, {n: tuple(v) for n, v in inbound.items()}, settings)


def _seconds(node_type: type[contract.NodeType], settings: Mapping[str, Any]) -> float:
    try:
        policy, _ = contract.split_policy(settings, node_type.policy)
    except node_errors.InvalidParams:  # already refused by selection; never here
        return DEFAULT_RUN_SECONDS
    return policy.timeout_s if policy.timeout_s is not None else DEFAULT_RUN_SECONDS


def _token_credits(settings: Mapping[str, Any], prices: Mapping[str, Mapping[str, float]], edge_inputs: int) -> float:
    table = settings.get("prices")
    if not isinstance(table, Mapping):
        table = prices.get(str(settings.get("model")), {})
    input_tokens = math.ceil(_text_length(settings.get(key) for key in _TEXT_KEYS) / CHARS_PER_TOKEN)
    input_tokens += EDGE_INPUT_TOKENS * edge_inputs
    max_tokens = settings.get("max_tokens")
    output_tokens = max_tokens if isinstance(max_tokens, int) and not isinstance(max_tokens, bool) else 0
    return (input_tokens * _number(table.get("input")) + output_tokens * _number(table.get("output"))) / PER_MILLION


def _text_length(values: Iterable[Any]) -> int:
    """Characters of text in ``values``: strings, and strings inside lists and objects (messages)."""
    total = 0
    for value in values:
        if isinstance(value, str):
            total += len(value)
        elif isinstance(value, Mapping):
            total += _text_length(value.values())
        elif isinstance(value, list):
            total += _text_length(value)
    return total


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0
