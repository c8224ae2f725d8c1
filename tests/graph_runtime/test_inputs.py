"""Typed inputs (SPEC §9): schemas checked at load, start data checked at selection with exact paths."""

from __future__ import annotations

from typing import Any

import pytest

from graph_runtime import errors, selection, validation
from graph_runtime.flow import Flow, parse
from graph_runtime.models import TaskRequest
from tests.support import FlowBuilder, registry_with_test_types

REGISTRY = registry_with_test_types()

SCHEMA = {
    "type": "object",
    "properties": {
        "image_url": {"type": "string", "format": "uri"},
        "style": {"enum": ["short", "long"]},
        "size": {"type": "object", "properties": {"width": {"type": "integer", "minimum": 1}}},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["image_url"],
    "additionalProperties": False,
}


def _flow(inputs: Any, **data: Any) -> Flow:
    built = FlowBuilder("typed", inputs=inputs).node("in", "start", data=data).node("out", "end").edge("in", "out")
    return validation.validate(parse(built.build()), REGISTRY)


def _run(flow: Flow, data: dict[str, Any] | None = None, start: str = "in", end: str = "out") -> selection.Plan:
    overrides = {} if data is None else {start: {"data": data}}
    return selection.plan(flow, REGISTRY, TaskRequest(start, end, end, node_settings=overrides))


def test_valid_data_passes_and_defaults_merge_first() -> None:
    flow = _flow(SCHEMA, image_url="https://example.com/cat.jpg")
    assert _run(flow).settings["in"]["data"] == {"image_url": "https://example.com/cat.jpg"}
    plan = _run(flow, {"style": "long", "size": {"width": 3}})
    assert plan.settings["in"]["data"]["style"] == "long"


@pytest.mark.parametrize(("data", "field", "words"), [
    ({"styel": "long"}, "node_settings.in.data.styel", "not an input of this flow"),
    ({"style": "huge"}, "node_settings.in.data.style", "is not one of"),
    ({"size": {"width": 0}}, "node_settings.in.data.size.width", "minimum"),
    ({"tags": ["a", 7]}, "node_settings.in.data.tags.1", "is not of type 'string'"),
    ({"image_url": None}, "node_settings.in.data.image_url", "is not of type 'string'"),
])
def test_bad_data_names_the_path(data: dict[str, Any], field: str, words: str) -> None:
    flow = _flow(SCHEMA, image_url="https://example.com/cat.jpg")
    with pytest.raises(errors.InvalidSettings) as info:
        _run(flow, data)
    assert info.value.field == field
    assert words in info.value.message and "'in'" in info.value.message


def test_a_missing_required_input_names_it() -> None:
    flow = _flow(SCHEMA)
    with pytest.raises(errors.InvalidSettings) as info:
        _run(flow)
    assert info.value.field == "node_settings.in.data.image_url"
    assert "is required" in info.value.message


def test_keyed_form_types_each_start_node_and_only_those_that_run() -> None:
    built = (FlowBuilder("two", inputs={"a": {"type": "object", "required": ["n"]}})
             .node("a", "start").node("b", "start").node("ea", "end").node("eb", "end")
             .edge("a", "ea").edge("b", "eb").build())
    flow = validation.validate(parse(built), REGISTRY)
    assert _run(flow, start="b", end="eb").order == ("b", "eb")
    with pytest.raises(errors.InvalidSettings) as info:
        _run(flow, start="a", end="ea")
    assert info.value.field == "node_settings.a.data.n"
    assert _run(flow, {"n": 1}, start="a", end="ea").settings["a"]["data"] == {"n": 1}


@pytest.mark.parametrize("inputs", [None, {}])
def test_a_flow_without_inputs_needs_no_validator(inputs: Any) -> None:
    flow = _flow(inputs, anything="goes")
    _run(flow, {"more": 1})
    assert not any(isinstance(key, tuple) and key[0] == "inputs" for key in flow.memo)


@pytest.mark.parametrize(("inputs", "words"), [
    ({"type": "object", "properties": {"n": {"type": "integr"}}}, "inputs: not a valid JSON Schema at properties.n.type"),
    ({"type": "string"}, "the schema's type is 'string'"),
    ({"in": "not a schema"}, "inputs.in: a JSON Schema must be an object"),
    ({"type": "object", "required": "n"}, "inputs: not a valid JSON Schema"),
    ({"$schema": "https://example.com/mine"}, "is not a JSON Schema draft this server knows"),
    ({"$schema": {}}, "is not a JSON Schema draft this server knows"),
    ({"properties": {"n": {"$ref": "https://example.com/n.json"}}}, "only references inside the schema"),
    ({"properties": {"n": {"pattern": "(["}}}, "inputs: not a valid JSON Schema"),
    ({"$ref": "#"}, "inputs: the schema cannot be used: a $ref refers to itself without end"),
    ({"allOf": [{"$ref": "#/$defs/gone"}]}, "inputs: the schema cannot be used"),
])
def test_broken_schemas_are_load_problems(inputs: Any, words: str) -> None:
    built = FlowBuilder("bad", inputs=inputs).node("in", "start").node("out", "end").edge("in", "out").build()
    with pytest.raises(errors.FlowInvalid) as info:
        validation.validate(parse(built), REGISTRY)
    assert any(words in problem for problem in info.value.problems), info.value.problems


def test_one_schema_with_several_start_nodes_must_be_keyed() -> None:
    built = (FlowBuilder("two", inputs={"type": "object"}).node("a", "start").node("b", "start").node("e", "end")
             .edge("a", "e", input="x").edge("b", "e", input="y").build())
    with pytest.raises(errors.FlowInvalid, match="key inputs by start node id"):
        validation.validate(parse(built), REGISTRY)


def test_inputs_need_a_start_node() -> None:
    built = FlowBuilder("none", inputs={"type": "object"}).node("c", "constant", value=1).build()
    with pytest.raises(errors.FlowInvalid, match="no node of type 'start'"):
        validation.validate(parse(built), REGISTRY)


def test_inputs_are_part_of_the_definition_and_digest() -> None:
    plain = parse(FlowBuilder("d").node("in", "start").build())
    typed = parse(FlowBuilder("d", inputs={"type": "object"}).node("in", "start").build())
    assert typed.definition()["inputs"] == {"type": "object"} and "inputs" not in plain.definition()
    assert typed.digest() != plain.digest()
    assert typed.input_schemas == {"in": {"type": "object"}}


def test_local_refs_work_and_a_dangling_one_is_a_422_not_a_crash() -> None:
    defs = {"$defs": {"size": {"type": "integer", "minimum": 1}}, "type": "object"}
    flow = _flow({**defs, "properties": {"w": {"$ref": "#/$defs/size"}}})
    with pytest.raises(errors.InvalidSettings) as info:
        _run(flow, {"w": 0})
    assert info.value.field == "node_settings.in.data.w"
    dangling = _flow({**defs, "properties": {"w": {"$ref": "#/$defs/nope"}}})
    with pytest.raises(errors.InvalidSettings) as info:
        _run(dangling, {"w": 0})
    assert info.value.field == "node_settings.in.data" and "cannot be used" in info.value.message
    endless = _flow({"$defs": {"x": {"$ref": "#/$defs/x"}}, "properties": {"w": {"$ref": "#/$defs/x"}}})
    with pytest.raises(errors.InvalidSettings, match="refers to itself without end"):
        _run(endless, {"w": 0})


def test_a_huge_bad_value_is_not_echoed_whole() -> None:
    flow = _flow(SCHEMA, image_url="https://example.com/cat.jpg")
    with pytest.raises(errors.InvalidSettings) as info:
        _run(flow, {"size": {"width": "x" * 1_000_000}})
    assert info.value.field == "node_settings.in.data.size.width" and len(info.value.message) < 400
