"""Subgraph selection on the sample flow with two starts and two ends, and its 422 cases."""

from __future__ import annotations

from pathlib import Path

import pytest

from graph_runtime import errors, selection
from graph_runtime.flow import read_file
from graph_runtime.models import TaskRequest
from tests.support import registry_with_test_types

FLOW = read_file(Path(__file__).resolve().parents[2] / "sample_flows" / "two-starts-two-ends.yaml")
REGISTRY = registry_with_test_types()


def test_deep_merge_merges_objects_and_replaces_the_rest() -> None:
    base = {"data": {"a": 1, "nested": {"x": 1, "y": 2}}, "list": [1, 2], "keep": True}
    merged = selection.deep_merge(base, {"data": {"nested": {"y": 3}, "b": 2}, "list": [9]})
    assert merged == {"data": {"a": 1, "b": 2, "nested": {"x": 1, "y": 3}}, "list": [9], "keep": True}
    assert base["data"]["nested"] == {"x": 1, "y": 2}


def test_two_starts_without_defaults_asks_for_the_start_node() -> None:
    with pytest.raises(errors.SelectionError) as info:
        selection.resolve_ids(FLOW, None, "lang-end", None)
    assert info.value.field == "start_node_id"
    assert "text-start" in info.value.message and "lang-start" in info.value.message


def test_result_defaults_to_the_requested_end() -> None:
    assert selection.resolve_ids(FLOW, "lang-start", "lang-end", None) == ("lang-start", "lang-end", "lang-end")


def test_branch_beside_the_path_runs_and_nothing_past_end() -> None:
    plan = selection.plan(FLOW, REGISTRY, TaskRequest("greet", "card-end", "card-end",
                                                      node_settings={"greet": {"name": "Bob"}}))
    assert set(plan.order) == {"greet", "lang-start", "language", "card", "card-end"}
    assert "lang-end" not in plan.order and "text-start" not in plan.order


def test_missing_input_from_a_node_that_does_not_run_is_listed() -> None:
    with pytest.raises(errors.MissingInputs) as info:
        selection.plan(FLOW, REGISTRY, TaskRequest("greet", "card-end", "card-end"))
    assert info.value.missing == [("greet", "name", "text-start")]
    assert info.value.field == "node_settings.greet.name"


@pytest.mark.parametrize(("request_", "field"), [
    (TaskRequest("lang-start", "card-end", "lang-end"), "result_node_id"),
    (TaskRequest("card", "lang-end", "lang-end"), "start_node_id"),
    (TaskRequest("lang-start", "lang-end", "lang-end", node_settings={"nope": {}}), "node_settings.nope"),
    (TaskRequest("lang-start", "lang-end", "lang-end", node_settings={"card": {}}), "node_settings.card"),
    (TaskRequest("lang-start", "lang-end", "lang-end", node_settings={"language": 3}), "node_settings.language"),
    (TaskRequest("lang-start", "lang-end", "lang-end", node_settings={"language": {"path": 7}}),
     "node_settings.language.path"),
    (TaskRequest("lang-start", "lang-end", "lang-end", node_settings={"language": {"retries": -1}}),
     "node_settings.language.retries"),
])
def test_requests_that_cannot_run_name_the_field(request_: TaskRequest, field: str) -> None:
    with pytest.raises(errors.GraphRuntimeError) as info:
        selection.plan(FLOW, REGISTRY, request_)
    assert info.value.field == field


def test_draw_marks_the_run_set() -> None:
    chosen = selection.run_set(selection.graph_of(FLOW), "greet", "card-end")
    text = "\n".join(selection.draw(FLOW, chosen))
    assert "● greet (template)" in text and "○ text-start (start)" in text and "○ lang-end (end)" in text
    assert "● lang-start (start)" in text


def test_a_setting_for_an_input_an_edge_feeds_is_refused() -> None:
    with pytest.raises(errors.SelectionError) as info:
        selection.plan(FLOW, REGISTRY, TaskRequest("text-start", "card-end", "card-end",
                                                   node_settings={"greet": {"name": "shadow"}}))
    assert info.value.field == "node_settings.greet.name" and "text-start" in info.value.message
