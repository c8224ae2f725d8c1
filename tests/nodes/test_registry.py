"""The registry: core types, duplicates and entry-point plugins."""

from __future__ import annotations

from importlib import metadata

import pytest

from nodes import errors
from nodes.builtin import CORE_TYPES
from nodes.registry import ENTRY_POINT_GROUP, Registry, default_registry
from tests.nodes.helpers import make_ctx
from tests.nodes.plugin_sample import Shout

CORE_NAMES = {
    "start",
    "end",
    "constant",
    "template",
    "delay",
    "guard",
    "pick",
    "merge",
    "http_request",
}


def _entry_point(value: str) -> metadata.EntryPoint:
    return metadata.EntryPoint(name="x", value=value, group=ENTRY_POINT_GROUP)


def test_default_registry_has_every_core_type() -> None:
    registry = default_registry(plugins=False)

    assert {t.type for t in registry} == CORE_NAMES
    assert len(registry) == len(CORE_TYPES) == 9


@pytest.mark.parametrize("node_type", CORE_TYPES, ids=lambda t: t.type)
def test_core_types_describe_themselves(node_type) -> None:
    # GET /node-types shows these: a schema for both models and a description.
    assert node_type.description.strip()
    assert node_type.Params.model_json_schema()["type"] == "object"
    assert node_type.Output.model_json_schema()["type"] == "object"


def test_only_http_request_costs_credits() -> None:
    costs = {t.type: t.cost.price(seconds=10, usage={}) for t in CORE_TYPES}

    assert costs.pop("http_request") > 0
    assert set(costs.values()) == {0.0}


def test_registering_a_name_twice_fails() -> None:
    registry = default_registry(plugins=False)
    start = registry.get("start")

    with pytest.raises(errors.DuplicateNodeType, match="start"):
        registry.register(start)


def test_unknown_type_is_an_error() -> None:
    with pytest.raises(errors.UnknownNodeType, match="nope"):
        default_registry(plugins=False).get("nope")


async def test_entry_point_naming_a_class_registers_it() -> None:
    registry = Registry()

    registry.load_entry_points([_entry_point("tests.nodes.plugin_sample:Shout")])

    assert registry.get("acme.shout") is Shout
    node = registry.instance("acme.shout")
    output = await node.run(Shout.Params(text="hi"), make_ctx())
    assert output.text == "HI"


def test_entry_point_naming_a_callable_lets_it_register() -> None:
    registry = default_registry(plugins=False)

    registry.load_entry_points([_entry_point("tests.nodes.plugin_sample:register")])

    assert "acme.whisper" in registry
    assert len(registry) == 10


def test_plugin_cannot_take_a_core_name() -> None:
    registry = default_registry(plugins=False)
    registry.register(Shout)

    with pytest.raises(errors.DuplicateNodeType):
        registry.load_entry_points([_entry_point("tests.nodes.plugin_sample:Shout")])
