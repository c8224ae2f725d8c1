"""The dry run (SPEC §9 "Plan"): what a request would run, in which parallel levels, at what cost.

Everything here reads a :class:`selection.Plan` that has already passed every check execute makes;
nothing is written and no node code runs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import networkx as nx

from graph_runtime import selection
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

PER_MILLION = 1_000_000  # LLM prices are credits per 1M tokens (nodes.builtin.llm.client.TokenPrices)
_TEXT_KEYS = ("prompt", "system", "messages", "input")  # where an llm.* node's input text sits


@dataclass(frozen=True)
class CostRange:
    """Credits a run may cost: ``min`` if every node runs as cheaply as it can, ``max`` at worst."""

    min: float
    max: float


@dataclass(frozen=True)
class DryRun:
    """What ``POST /flow/{id}/plan`` answers.

    Attributes:
        run_set: the nodes that would run, in a topological order.
        levels: the run set in topological generations: every node of a level may run together,
            once every earlier level is done. Within a level, nodes keep the flow's order.
        missing_inputs: always empty (a missing input is refused, as execute refuses it).
        cached: the nodes whose output the cache would give; empty until the output cache exists.
        estimated_cost: see :func:`estimate`.
    """

    run_set: tuple[str, ...]
    levels: tuple[tuple[str, ...], ...]
    missing_inputs: tuple[str, ...]
    cached: tuple[str, ...]
    estimated_cost: CostRange

    def as_json(self) -> dict[str, Any]:
        """The wire shape of SPEC §9."""
        return {"run_set": list(self.run_set), "levels": [list(level) for level in self.levels],
                "missing_inputs": list(self.missing_inputs), "cached": list(self.cached),
                "estimated_cost": {"min": self.estimated_cost.min, "max": self.estimated_cost.max}}


def dry_run(chosen: selection.Plan, registry: Registry,
            prices: Mapping[str, Mapping[str, float]] | None = None) -> DryRun:
    """The dry run of a checked selection; ``prices`` is the server's ``LLM_PRICES`` table."""
    return DryRun(chosen.order, levels(chosen), (), (), estimate(chosen, registry, prices or {}))


_LEVELS_PER_FLOW = 64


def levels(chosen: selection.Plan) -> tuple[tuple[str, ...], ...]:
    """The run set's topological generations, each in the flow's node order.

    Kept per flow revision and run set, as selection keeps its topology: building the graph is
    most of a 1,000-node plan's time, and a client planning before each execute asks again.
    """
    key = ("plan-levels", chosen.order)
    found = chosen.flow.memo.get(key)
    if found is not None:
        return found  # type: ignore[no-any-return]
    graph = nx.DiGraph()
    graph.add_nodes_from(chosen.order)
    graph.add_edges_from((p, n) for n, preds in chosen.predecessors.items() for p in preds)
    position = {node.id: i for i, node in enumerate(chosen.flow.nodes)}
    found = tuple(tuple(sorted(level, key=position.__getitem__)) for level in nx.topological_generations(graph))
    if len(chosen.flow.memo) < _LEVELS_PER_FLOW:
        chosen.flow.memo[key] = found
    return found


def estimate(chosen: selection.Plan, registry: Registry, prices: Mapping[str, Mapping[str, float]]) -> CostRange:
    """The cost range from each node type's :class:`CostModel`.

    ``min`` sums the ``per_run`` of the nodes that run whatever a ``switch`` decides (a node behind
    a ``when`` edge may be skipped, and so may what depends on it, unless a ``join: any`` has a
    sure predecessor); ``max`` counts every node.
    ``max`` adds ``per_second`` × the node's timeout (:data:`DEFAULT_RUN_SECONDS` when it has none)
    and, for ``llm.*`` types, the tokens priced by the node's ``prices`` or ``prices[model]``:
    the input estimate (:data:`CHARS_PER_TOKEN`, :data:`EDGE_INPUT_TOKENS`) plus ``max_tokens`` of
    output. Other usage units, a model with no price and an unset ``max_tokens`` count 0.
    """
    low = high = 0.0
    optional = maybe_skipped(chosen)
    for node_id in chosen.order:
        node_type = registry.get(chosen.flow.node(node_id).type)
        settings = chosen.settings[node_id]
        cost = node_type.cost
        low += 0.0 if node_id in optional else cost.per_run
        high += cost.per_run + (cost.per_second * _seconds(node_type, settings) if cost.per_second else 0.0)
        if node_type.type.startswith("llm."):
            inputs = len(chosen.inbound[node_id])
            high += _token_credits(settings, prices, inputs) * cost.per_unit.get("token_credits", 0.0)
    return CostRange(round(low, 9), round(high, 9))


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
