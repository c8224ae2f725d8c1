"""The dry run (SPEC §9 "Plan"): what a request would run, in which parallel levels, from the
cache, at what cost.

Everything here reads a :class:`selection.Plan` that has already passed every check execute makes;
nothing is written and no node code runs. The cost lives in :mod:`plan_cost`, the cached list in
:mod:`plan_cached`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from graph_runtime import plan_cached, plan_cost, selection
from graph_runtime.plan_cost import CostRange
from nodes.registry import Registry


@dataclass(frozen=True)
class DryRun:
    """What ``POST /flow/{id}/plan`` answers.

    Attributes:
        run_set: the nodes that would run, in a topological order.
        levels: the run set in topological generations: every node of a level may run together,
            once every earlier level is done. Within a level, nodes keep the flow's order.
        missing_inputs: always empty (a missing input is refused, as execute refuses it).
        cached: the run-set nodes the output cache would answer (:mod:`plan_cached`).
        estimated_cost: see :func:`plan_cost.estimate`; the cached nodes count 0.
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


async def dry_run(chosen: selection.Plan, registry: Registry, prices: Mapping[str, Mapping[str, float]] | None = None,
                  *, cache: plan_cached.CacheProbe | None = None,
                  load_flow: plan_cost.LoadFlow | None = None) -> DryRun:
    """The dry run of a checked selection.

    Args:
        prices: the server's ``LLM_PRICES`` table.
        cache: how to ask the output cache; None (no cache) lists nothing as cached.
        load_flow: how to read the child flows of ``map``/``subflow`` nodes; None counts them unknown.
    """
    prices = prices or {}
    cached = await plan_cached.cached_nodes(chosen, registry, cache) if cache is not None else ()
    children = await plan_cost.child_costs(chosen, registry, prices, load_flow)
    cost = plan_cost.estimate(chosen, registry, prices, cached=frozenset(cached), children=children)
    return DryRun(chosen.order, levels(chosen), (), cached, cost)


_LEVELS_PER_FLOW = 64


def levels(chosen: selection.Plan) -> tuple[tuple[str, ...], ...]:
    """The run set's topological generations, each in the flow's node order.

    Kept per flow revision and run set, as selection keeps its topology: a client planning before
    each execute asks again.
    """
    key = ("plan-levels", chosen.order)
    found = chosen.flow.memo.get(key)
    if found is not None:
        return found  # type: ignore[no-any-return]
    position = {node.id: i for i, node in enumerate(chosen.flow.nodes)}
    waiting = {node_id: len(chosen.predecessors[node_id]) for node_id in chosen.order}
    level = [node_id for node_id, count in waiting.items() if count == 0]
    generations = []
    while level:  # Kahn's algorithm a level at a time, on the selection's own maps (no graph to build)
        generations.append(tuple(sorted(level, key=position.__getitem__)))
        following = []
        for node_id in level:
            for successor in chosen.successors[node_id]:
                waiting[successor] -= 1
                if waiting[successor] == 0:
                    following.append(successor)
        level = following
    found = tuple(generations)
    if len(chosen.flow.memo) < _LEVELS_PER_FLOW:
        chosen.flow.memo[key] = found
    return found
