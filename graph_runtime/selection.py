"""Subgraph selection (SPEC §2): which nodes a request runs, with what settings.

Run set = E and its ancestors, minus the strict ancestors of S.
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any

import networkx as nx

from graph_runtime import errors, inputs
from graph_runtime.flow import Edge, Flow
from graph_runtime.models import TaskRequest
from nodes import contract
from nodes import errors as node_errors
from nodes.limits import Limits
from nodes.registry import Registry


@dataclass(frozen=True)
class Plan:
    """A selected subgraph, ready for the executor.

    Attributes:
        order: the run set in a topological order.
        predecessors: for each run-set node, the run-set nodes it waits for.
        successors: for each run-set node, the run-set nodes that wait for it.
        inbound: for each run-set node, the edges that feed it from run-set nodes.
        settings: for each run-set node, its settings merged with the request's node_settings.
    """

    flow: Flow
    request: TaskRequest
    order: tuple[str, ...]
    predecessors: Mapping[str, tuple[str, ...]]
    successors: Mapping[str, tuple[str, ...]]
    inbound: Mapping[str, tuple[Edge, ...]]
    settings: Mapping[str, Mapping[str, Any]]


def graph_of(flow: Flow) -> nx.DiGraph:
    graph = nx.DiGraph()
    graph.add_nodes_from(node.id for node in flow.nodes)
    graph.add_edges_from((edge.source, edge.target) for edge in flow.edges)
    return graph


def draw(flow: Flow, chosen: set[str] | None = None) -> list[str]:
    """The DAG as lines of a text tree, each node as ``id (type)``, marked ●/○ by ``chosen``."""
    types = {node.id: node.type for node in flow.nodes}

    def label(node_id: str) -> str:
        mark = "" if chosen is None else ("● " if node_id in chosen else "○ ")
        return f"{mark}{node_id} ({types[node_id]})"

    return list(nx.generate_network_text(nx.relabel_nodes(graph_of(flow), label), ascii_only=False))


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Objects merge key by key, recursively; anything else in ``override`` replaces."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def resolve_ids(
    flow: Flow, start: str | None, end: str | None, result: str | None
) -> tuple[str, str, str]:
    """Fill in S, E and R from the flow's defaults or its only start/end node (SPEC §2)."""
    ids = {node.id for node in flow.nodes}
    s = start or flow.defaults.start_node_id or _only_of_type(flow, "start", "start_node_id")
    e = end or flow.defaults.end_node_id or _only_of_type(flow, "end", "end_node_id")
    r = result or (end if end else None) or flow.defaults.result_node_id or e
    for field, value in (("start_node_id", s), ("end_node_id", e), ("result_node_id", r)):
        if value not in ids:
            raise errors.SelectionError(f"flow {flow.id!r} has no node {value!r}", field=field)
    return s, e, r


def default_ids(flow: Flow) -> dict[str, str | None]:
    """What a request naming no nodes gets; None where the request must name one."""
    ids: dict[str, str | None] = {}
    for field, kind, given in (("start_node_id", "start", flow.defaults.start_node_id),
                               ("end_node_id", "end", flow.defaults.end_node_id)):
        found = [node.id for node in flow.nodes if node.type == kind]
        ids[field] = given or (found[0] if len(found) == 1 else None)
    ids["result_node_id"] = flow.defaults.result_node_id or ids["end_node_id"]
    return ids


def _only_of_type(flow: Flow, node_type: str, field: str) -> str:
    found = [node.id for node in flow.nodes if node.type == node_type]
    if len(found) == 1:
        return found[0]
    which = f"{len(found)} nodes of type {node_type!r} ({', '.join(found)})" if found else f"no node of type {node_type!r}"
    raise errors.SelectionError(f"flow {flow.id!r} has {which} and no default; give {field}", field=field)


def run_set(graph: nx.DiGraph, start: str, end: str) -> set[str]:
    """E and its ancestors, minus the strict ancestors of S."""
    return ({end} | nx.ancestors(graph, end)) - nx.ancestors(graph, start)


def plan(flow: Flow, registry: Registry, request: TaskRequest, limits: Limits | None = None) -> Plan:
    """Select the subgraph ``request`` names and check its settings.

    ``limits``: the server's ceilings; a request's ``node_settings`` above one (an
    ``http_request``'s ``max_response_bytes``) are refused here, before anything is queued.

    Raises:
        errors.SelectionError: S not upstream of E, R outside the run set, bad node_settings.
        errors.MissingInputs: inputs fed from outside the run set and not given.
        errors.InvalidSettings: merged settings not valid for a node's type.
    """
    s, e, r = request.start_node_id, request.end_node_id, request.result_node_id
    topo = _topology(flow, registry, s, e)
    if r not in topo.selected:
        raise errors.SelectionError(
            f"result node {r!r} does not run between {s!r} and {e!r}", field="result_node_id"
        )
    overrides = request.node_settings
    _check_node_settings(flow, overrides, topo.selected)
    taken = request.from_task_inputs
    missing = [(target, name, source) for target, name, source in topo.outside
               if name not in overrides.get(target, {}) and name not in taken.get(target, {})]
    for edge in (edge for n in overrides for edge in topo.inbound[n]):
        if edge.input_name in overrides[edge.target]:
            # The edge would silently win over the setting; say so instead.
            raise errors.SelectionError(
                f"input {edge.input_name!r} of node {edge.target!r} comes from node {edge.source!r}, which runs; "
                f"set it on {edge.source!r} instead, or start at {edge.target!r}",
                field=f"node_settings.{edge.target}.{edge.input_name}",
            )
    if missing:
        raise errors.MissingInputs(missing)
    settings = {n: _checked_settings(flow, registry, n, {**taken.get(n, {}), **overrides.get(n, {})},
                                     topo.inbound[n], limits) if n in overrides or n in taken
                else topo.settings(flow, registry, n) for n in topo.order}
    if flow.input_schemas:  # typed inputs (SPEC §9); a flow without them pays nothing here
        inputs.check(flow, topo.order, settings)
    return Plan(flow, request, topo.order, topo.predecessors, topo.successors, topo.inbound, settings)


@dataclass
class _Topology:
    """What a selection (S, E) of a flow is, whatever the request's node_settings: kept per flow."""

    selected: frozenset[str]
    order: tuple[str, ...]
    predecessors: Mapping[str, tuple[str, ...]]
    successors: Mapping[str, tuple[str, ...]]
    inbound: Mapping[str, tuple[Edge, ...]]
    outside: tuple[tuple[str, str, str], ...]  # (target, input, source) fed from outside the run set
    _settings: dict[str, dict[str, Any]]

    def settings(self, flow: Flow, registry: Registry, node_id: str) -> dict[str, Any]:
        """The node's own settings, checked once."""
        found = self._settings.get(node_id)
        if found is None:
            found = self._settings[node_id] = _checked_settings(flow, registry, node_id, {}, self.inbound[node_id])
        return found


_TOPOLOGIES_PER_FLOW = 64

VALIDATED = "validated"
"""``Flow.memo[(VALIDATED, registry)]``: each node's edge-fed inputs, set when ``validation.validate``
passed the flow: a selection need not check those nodes' own settings again."""


def warm(flow: Flow, registry: Registry) -> None:
    """Work out the flow's default selection now (when it has one), while it is being stored, so
    its first plan or execute finds it done (a 1,000-node flow: ~20 ms of graph work)."""
    try:
        s, e, _ = resolve_ids(flow, None, None, None)
        _topology(flow, registry, s, e)
    except errors.GraphRuntimeError:
        pass  # no default selection, or an invalid one: a request names its own, and is told then


def _topology(flow: Flow, registry: Registry, s: str, e: str) -> _Topology:
    key = ("selection", registry, s, e)  # the registry itself (not its id, which can be reused)
    found = flow.memo.get(key)
    if found is not None:
        return found
    graph = graph_of(flow)
    if s != e and s not in nx.ancestors(graph, e):
        raise errors.SelectionError(f"start node {s!r} is not upstream of end node {e!r}", field="start_node_id")
    selected = run_set(graph, s, e)
    inbound: dict[str, list[Edge]] = {n: [] for n in selected}
    outside = []
    for edge in flow.edges:
        if edge.target in selected:
            if edge.source in selected:
                inbound[edge.target].append(edge)
            elif edge.carries_value:  # a control edge from outside brings nothing to miss
                outside.append((edge.target, edge.input_name, edge.source))
    order = tuple(n for n in nx.topological_sort(graph) if n in selected)
    preds = {n: tuple(sorted({edge.source for edge in inbound[n]})) for n in order}
    succs: dict[str, list[str]] = {n: [] for n in order}
    for n in order:
        for p in preds[n]:
            succs[p].append(n)
    found = _Topology(frozenset(selected), order, preds, {n: tuple(v) for n, v in succs.items()},
                      {n: tuple(v) for n, v in inbound.items()}, tuple(outside), {})
    if len(flow.memo) < _TOPOLOGIES_PER_FLOW:
        flow.memo[key] = found
    return found


def _check_node_settings(flow: Flow, node_settings: Mapping[str, Any], selected: AbstractSet[str]) -> None:
    ids = {node.id for node in flow.nodes}
    for node_id, value in node_settings.items():
        field = f"node_settings.{node_id}"
        if node_id not in ids:
            raise errors.SelectionError(f"flow {flow.id!r} has no node {node_id!r}", field=field)
        if node_id not in selected:
            raise errors.SelectionError(f"node {node_id!r} does not run in this selection; remove its settings", field=field)
        if not isinstance(value, Mapping):
            raise errors.SelectionError(f"settings of node {node_id!r} must be an object", field=field)
        _check_override_policy(flow, node_id, value)


def _check_override_policy(flow: Flow, node_id: str, value: Mapping[str, Any]) -> None:
    if flow.override_policy == "off" and value:
        raise errors.SelectionError(
            f"flow {flow.id!r} does not accept node_settings (override_policy: off)", field=f"node_settings.{node_id}"
        )
    if flow.override_policy == "declared":
        allowed = set(flow.node(node_id).overridable)
        for key in value:
            if key not in allowed:
                raise errors.SelectionError(
                    f"setting {key!r} of node {node_id!r} is not overridable (allowed: {sorted(allowed)})",
                    field=f"node_settings.{node_id}.{key}",
                )


def _checked_settings(
    flow: Flow, registry: Registry, node_id: str, override: Mapping[str, Any], inbound: tuple[Edge, ...],
    limits: Limits | None = None,
) -> dict[str, Any]:
    node = flow.node(node_id)
    if not override and limits is None:
        validated = flow.memo.get((VALIDATED, registry))
        if validated is not None and validated.get(node_id) == frozenset(edge.input_name for edge in inbound):
            return dict(node.settings)  # checked exactly so when the flow was loaded
    try:
        node_type = registry.get(node.type)
    except node_errors.UnknownNodeType:
        raise errors.SelectionError(
            f"node {node_id!r} has type {node.type!r}, which is not installed on this server", node_id=node_id
        ) from None
    merged = deep_merge(node.settings, override)
    try:
        _, params = contract.split_policy(merged, node_type.policy)
        contract.validate_params(node_type, params, frozenset(edge.input_name for edge in inbound), limits=limits,
                                 unresolved=True)
    except node_errors.InvalidParams as exc:
        raise errors.InvalidSettings(
            f"node {node_id!r}: {exc.message}", node_id=node_id, field=f"node_settings.{node_id}.{exc.field or ''}".rstrip(".")
        ) from None
    return merged


def fed_from_outside(flow: Flow, registry: Registry, start: str, end: str) -> tuple[Edge, ...]:
    """The edges that feed run-set nodes of (``start``, ``end``) from nodes outside the run set.

    Raises:
        errors.SelectionError: ``start`` is not upstream of ``end``.
    """
    selected = _topology(flow, registry, start, end).selected
    # A control edge (a switch's `when` with no value) brings nothing: nothing to take from a task.
    return tuple(edge for edge in flow.edges
                 if edge.target in selected and edge.source not in selected and edge.carries_value)
