"""Whole-flow validation against the registry: every problem is listed, nothing half-loaded."""

from __future__ import annotations

import jinja2
import jinja2.meta
import networkx as nx
import pydantic

from graph_runtime import errors, inputs, selection
from graph_runtime.flow import Flow, Node
from nodes import contract
from nodes import errors as node_errors
from nodes.registry import Registry


def validate(flow: Flow, registry: Registry) -> Flow:
    """Check ``flow`` against ``registry``; return it unchanged when it is valid.

    Checks: unique node ids, known node types whose extra is installed, settings valid for their
    type (parameters fed by edges may be missing), edges between existing nodes into inputs the
    type accepts, no input fed twice, no cycles, defaults naming existing nodes, edge outputs the
    upstream type produces (when its Output model is fixed), template variables something supplies,
    valid JSON Schemas in ``inputs``, ``when`` only on edges from a switch and naming one of its
    cases, and ``join: any`` only on a node with two predecessors or more.

    Raises:
        errors.FlowInvalid: listing every problem found.
    """
    problems: list[str] = []
    ids = [node.id for node in flow.nodes]
    seen: set[str] = set()
    for node_id in ids:
        if node_id in seen:
            problems.append(f"nodes: id {node_id!r} is used more than once")
        seen.add(node_id)
    problems += _edge_problems(flow, seen, registry)
    problems += _settings_problems(flow, registry)
    problems += _output_problems(flow, registry)
    problems += _template_problems(flow)
    problems += _branch_problems(flow)
    problems += inputs.schema_problems(flow)
    for name in ("start_node_id", "end_node_id", "result_node_id"):
        value = getattr(flow.defaults, name)
        if value is not None and value not in seen:
            problems.append(f"defaults.{name}: no node has id {value!r}")
    if problems:
        raise errors.FlowInvalid(problems)
    # What was checked here need not be checked again by each selection of this flow (a plan or an
    # execute of a 1,000-node revision): each node's settings, with the inputs its edges feed.
    linked: dict[str, set[str]] = {node.id: set() for node in flow.nodes}
    for edge in flow.edges:
        linked[edge.target].add(edge.input_name)
    flow.memo[(selection.VALIDATED, registry)] = {node_id: frozenset(names) for node_id, names in linked.items()}
    selection.warm(flow, registry)
    return flow


def _edge_problems(flow: Flow, ids: set[str], registry: Registry) -> list[str]:
    problems: list[str] = []
    fed: dict[tuple[str, str], int] = {}
    graph = nx.DiGraph()
    graph.add_nodes_from(ids)
    types = {node.id: node.type for node in flow.nodes}
    merges = {node.id for node in flow.nodes if node.joins_any}
    for i, edge in enumerate(flow.edges):
        where = f"edges.{i}"
        for end, node_id in (("from", edge.source), ("to", edge.target)):
            if node_id not in ids:
                problems.append(f"{where}.{end}: no node has id {node_id!r}")
        if edge.source not in ids or edge.target not in ids:
            continue
        graph.add_edge(edge.source, edge.target)
        if not edge.carries_value:
            continue  # a control edge (when:) feeds no input
        key = (edge.target, edge.input_name)
        if key in fed and edge.target not in merges:  # a merge after a branch: each branch may feed it
            problems.append(f"{where}: input {edge.input_name!r} of {edge.target!r} is already fed by edges.{fed[key]}")
        fed[key] = i
        if edge.input_name in contract.POLICY_KEYS:
            problems.append(f"{where}.input: {edge.input_name!r} is a run setting (timeout/retries), not an input")
        elif types[edge.target] in registry and not registry.get(types[edge.target]).accepts_input(edge.input_name):
            problems.append(f"{where}.input: node {edge.target!r} ({types[edge.target]}) has no parameter {edge.input_name!r}")
    if not nx.is_directed_acyclic_graph(graph):
        cycle = nx.find_cycle(graph)
        path = " -> ".join([a for a, _ in cycle] + [cycle[0][0]])
        problems.append(f"edges: the graph has a cycle: {path}")
    return problems


def _settings_problems(flow: Flow, registry: Registry) -> list[str]:
    problems: list[str] = []
    linked: dict[str, set[str]] = {}
    for edge in flow.edges:
        linked.setdefault(edge.target, set()).add(edge.input_name)
    for i, node in enumerate(flow.nodes):
        try:
            node_type = registry.get(node.type)
        except node_errors.UnknownNodeType as exc:
            problems.append(f"nodes.{i}.type: {exc.message} (node {node.id!r})")
            continue
        missing_extra = node_type.unavailable_reason()
        if missing_extra is not None:
            problems.append(f"nodes.{i}.type: {missing_extra} (node {node.id!r})")
            continue
        try:
            _, params = contract.split_policy(node.settings, node_type.policy)
            contract.validate_params(node_type, params, frozenset(linked.get(node.id, ())), unresolved=True)
        except node_errors.InvalidParams as exc:
            where = f"nodes.{i}.settings" + (f".{exc.field}" if exc.field else "")
            problems.append(f"{where}: {exc.message} (node {node.id!r})")
            continue
        problems.extend(f"nodes.{i}.settings.{problem} (node {node.id!r})"
                        for problem in node_type.nested_problems(node.settings, registry))
    return problems


def _output_problems(flow: Flow, registry: Registry) -> list[str]:
    """Edges naming an output their upstream type never produces (fixed Output models only)."""
    problems: list[str] = []
    types = {node.id: node.type for node in flow.nodes}
    for i, edge in enumerate(flow.edges):
        type_name = types.get(edge.source)
        if edge.output is None or type_name is None or type_name not in registry:
            continue
        output_model: type[pydantic.BaseModel] = registry.get(type_name).Output
        if output_model.model_config.get("extra") == "allow" or edge.output in output_model.model_fields:
            continue
        produced = ", ".join(output_model.model_fields) or "nothing"
        problems.append(f"edges.{i}.output: node {edge.source!r} ({type_name}) has no output {edge.output!r} "
                        f"(it produces: {produced})")
    return problems


_PLAIN = jinja2.Environment()  # parse only, never render: the sandbox does that


def _template_problems(flow: Flow) -> list[str]:
    """Template variables that neither the node's settings, an inbound edge nor ``overridable`` supply."""
    problems: list[str] = []
    fed: dict[str, set[str]] = {}
    for edge in flow.edges:
        fed.setdefault(edge.target, set()).add(edge.input_name)
    for i, node in enumerate(flow.nodes):
        source = node.settings.get("template")
        if node.type != "template" or not isinstance(source, str) or "template" in fed.get(node.id, ()):
            continue
        try:
            wanted = jinja2.meta.find_undeclared_variables(_PLAIN.parse(source))
        except jinja2.TemplateSyntaxError:
            continue  # the node's own check names the line when it runs
        missing = sorted(wanted - _supplied(node, fed.get(node.id, set())) - set(_PLAIN.globals))
        if missing:
            problems.append(f"nodes.{i}.settings.template: no setting or edge supplies {', '.join(map(repr, missing))} "
                            f"(node {node.id!r}; list a variable given only at execute in its overridable)")
    return problems


def _supplied(node: Node, fed: set[str]) -> set[str]:
    return set(node.settings) | fed | set(node.overridable)


def _branch_problems(flow: Flow) -> list[str]:
    """``when`` on an edge not from a switch or naming no case; ``join: any`` where nothing can merge."""
    problems: list[str] = []
    nodes = {node.id: node for node in flow.nodes}
    parents: dict[str, set[str]] = {}
    for i, edge in enumerate(flow.edges):
        parents.setdefault(edge.target, set()).add(edge.source)
        source = nodes.get(edge.source)
        if edge.when is None or source is None:
            continue
        if source.type != "switch":
            problems.append(f"edges.{i}.when: node {edge.source!r} ({source.type}) is not a switch; "
                            "only edges from a switch take a case")
            continue
        cases = source.settings.get("cases")
        if isinstance(cases, dict) and edge.when not in cases:  # cases fed by an edge: known only at run
            problems.append(f"edges.{i}.when: switch {edge.source!r} has no case {edge.when!r} "
                            f"(its cases: {', '.join(map(str, cases)) or 'none'})")
    for i, node in enumerate(flow.nodes):
        cases, default = node.settings.get("cases"), node.settings.get("default")
        if node.type == "switch" and isinstance(cases, dict) and isinstance(default, str) and default not in cases:
            # The node's own check cannot run while its value is still to come from an edge.
            problems.append(f"nodes.{i}.settings.default: {default!r} is not one of the cases "
                            f"({', '.join(map(str, cases))}) (node {node.id!r})")
        if node.joins_any and len(parents.get(node.id, ())) < 2:
            problems.append(f"nodes.{i}.join: 'any' needs two predecessors or more to choose from "
                            f"(node {node.id!r} has {len(parents.get(node.id, ()))})")
    return problems
