"""Property tests of subgraph selection (SPEC §2) on random DAGs."""

from __future__ import annotations

import networkx as nx
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from graph_runtime import errors, selection
from graph_runtime.flow import parse
from graph_runtime.models import TaskRequest
from tests.support import registry_with_test_types

REGISTRY = registry_with_test_types()


@st.composite
def dags(draw: st.DrawFn) -> tuple[nx.DiGraph, str, str]:
    size = draw(st.integers(min_value=1, max_value=12))
    names = [f"n{i}" for i in range(size)]
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]
    edges = draw(st.lists(st.sampled_from(pairs), unique=True, max_size=30)) if pairs else []
    graph = nx.DiGraph()
    graph.add_nodes_from(names)
    graph.add_edges_from(edges)
    return graph, draw(st.sampled_from(names)), draw(st.sampled_from(names))


def flow_of(graph: nx.DiGraph) -> object:
    return parse({
        "id": "random",
        "nodes": [{"id": n, "type": "test.echo"} for n in graph.nodes],
        "edges": [{"from": a, "to": b} for a, b in graph.edges],
    })


def external_inputs(graph: nx.DiGraph, chosen: set[str]) -> dict[str, dict[str, int]]:
    given: dict[str, dict[str, int]] = {}
    for a, b in graph.edges:
        if b in chosen and a not in chosen:
            given.setdefault(b, {})[a] = 1
    return given


@settings(max_examples=300, deadline=None)
@given(dags())
def test_run_set_is_end_and_ancestors_minus_strict_ancestors_of_start(case: tuple[nx.DiGraph, str, str]) -> None:
    graph, s, e = case
    assume(s == e or nx.has_path(graph, s, e))  # otherwise the request is refused (next test)
    chosen = selection.run_set(graph, s, e)
    assert e in chosen and s in chosen
    for node in chosen:
        assert node == e or nx.has_path(graph, node, e)
        assert not (node != s and nx.has_path(graph, node, s))
    for path in nx.all_simple_paths(graph, s, e):
        assert set(path) <= chosen
    for node in graph.nodes:
        beside = node not in chosen and nx.has_path(graph, node, e) and not nx.has_path(graph, node, s)
        assert not beside, f"{node} feeds {e} without being upstream of {s} yet does not run"


@settings(max_examples=300, deadline=None)
@given(dags())
def test_plan_runs_exactly_the_run_set_in_dependency_order(case: tuple[nx.DiGraph, str, str]) -> None:
    graph, s, e = case
    flow = flow_of(graph)
    reachable = s == e or nx.has_path(graph, s, e)
    chosen = selection.run_set(graph, s, e)
    request = TaskRequest(s, e, e, node_settings=external_inputs(graph, chosen))
    if not reachable:
        with pytest.raises(errors.SelectionError) as info:
            selection.plan(flow, REGISTRY, request)
        assert info.value.field == "start_node_id"
        return
    plan = selection.plan(flow, REGISTRY, request)
    assert set(plan.order) == chosen
    position = {n: i for i, n in enumerate(plan.order)}
    for node in plan.order:
        for pred in plan.predecessors[node]:
            assert pred in chosen and position[pred] < position[node]
    assert plan.predecessors[s] == (), "nothing upstream of the start node runs"


@settings(max_examples=200, deadline=None)
@given(dags())
def test_inputs_from_outside_the_run_set_must_be_given(case: tuple[nx.DiGraph, str, str]) -> None:
    graph, s, e = case
    if not (s == e or nx.has_path(graph, s, e)):
        return
    chosen = selection.run_set(graph, s, e)
    needed = external_inputs(graph, chosen)
    request = TaskRequest(s, e, e)
    if not needed:
        selection.plan(flow_of(graph), REGISTRY, request)
        return
    with pytest.raises(errors.MissingInputs) as info:
        selection.plan(flow_of(graph), REGISTRY, request)
    listed = {(node, inp) for node, inp, _ in info.value.missing}
    assert listed == {(node, up) for node, ups in needed.items() for up in ups}
