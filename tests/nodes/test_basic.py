"""start, end, constant, pick, merge and guard, as a flow author sees them."""

from __future__ import annotations

import pytest

from nodes import contract, errors
from nodes.builtin import Constant, End, Guard, Merge, Pick, Start
from tests.nodes.helpers import make_ctx


async def _run(node_type, **params):
    return await node_type().run(node_type.Params(**params), make_ctx())


async def test_start_outputs_its_data_keys() -> None:
    output = await _run(Start, data={"image_url": "https://x/cat.jpg", "style": "short"})

    assert output.model_dump() == {"image_url": "https://x/cat.jpg", "style": "short"}


async def test_start_keeps_keys_that_are_not_identifiers() -> None:
    data = {"image-url": "u", "json": 1, "model_config": 2, "1": 3}

    assert (await _run(Start, data=data)).model_dump() == data


async def test_start_without_data_outputs_an_empty_object() -> None:
    assert (await _run(Start)).model_dump() == {}


def test_start_refuses_unknown_settings() -> None:
    with pytest.raises(errors.InvalidParams) as caught:
        contract.validate_params(Start, {"data": {}, "dat": {}})

    assert caught.value.field == "dat"


async def test_end_outputs_its_inputs_by_name() -> None:
    output = await _run(End, caption="a cat", request={"style": "short"})

    assert output.model_dump() == {"caption": "a cat", "request": {"style": "short"}}


async def test_constant_outputs_its_value_even_null() -> None:
    assert (await _run(Constant, value=[1, {"a": 2}])).model_dump() == {"value": [1, {"a": 2}]}
    assert (await _run(Constant, value=None)).model_dump() == {"value": None}


def test_constant_needs_a_value() -> None:
    with pytest.raises(errors.InvalidParams) as caught:
        contract.validate_params(Constant, {})

    assert caught.value.field == "value"


@pytest.mark.parametrize(
    ("path", "expected"),
    [("a", {"b": [{"c": 1}, {"c": 2}]}), ("a.b.1.c", 2), ("a.b.-1", {"c": 2}), ("n", None)],
)
async def test_pick_walks_keys_and_indexes(path, expected) -> None:
    value = {"a": {"b": [{"c": 1}, {"c": 2}]}, "n": None}

    assert (await _run(Pick, value=value, path=path)).value == expected


@pytest.mark.parametrize(
    ("path", "named"),
    [
        ("a.x", "no key 'x' in the object at a"),
        ("a.b.5", "index 5 is out of range at a.b"),
        ("a.b.first", "'first' is not a list index"),
        ("a.b.0.c.d", "cannot look up 'd' in the int at a.b.0.c"),
    ],
)
async def test_pick_names_the_missing_segment(path, named) -> None:
    value = {"a": {"b": [{"c": 1}]}}

    with pytest.raises(errors.NodeFailed, match=named) as caught:
        await _run(Pick, value=value, path=path)

    assert not caught.value.retryable


@pytest.mark.parametrize("path", ["", "a..b", "a."])
def test_pick_refuses_empty_path_segments(path) -> None:
    with pytest.raises(errors.InvalidParams) as caught:
        contract.validate_params(Pick, {"value": {}, "path": path})

    assert caught.value.field == "path"


async def test_merge_merges_objects_in_input_name_order() -> None:
    output = await _run(Merge, b={"x": 2, "y": 2}, a={"x": 1, "z": 1}, c=[3])

    # "b" sorts after "a", so its x wins; the list is kept under its input name.
    assert output.model_dump() == {"x": 2, "z": 1, "y": 2, "c": [3]}


async def test_merge_without_inputs_is_empty() -> None:
    assert (await _run(Merge)).model_dump() == {}


@pytest.mark.parametrize("condition", [True, "true", " True ", "TRUE"])
async def test_guard_passes_on_true(condition) -> None:
    assert (await _run(Guard, condition=condition)).model_dump() == {"ok": True}


@pytest.mark.parametrize("condition", [False, "false", "False"])
async def test_guard_fails_with_its_message(condition) -> None:
    with pytest.raises(errors.GuardFailed, match=r"^too big$") as caught:
        await _run(Guard, condition=condition, message="too big")

    assert caught.value.code == "guard_failed"
    assert not caught.value.retryable


async def test_guard_default_message() -> None:
    with pytest.raises(errors.GuardFailed, match="guard condition is false"):
        await _run(Guard, condition=False)


@pytest.mark.parametrize("condition", [1, 0, "yes", "", None, "no", [True]])
def test_guard_refuses_conditions_that_are_not_booleans(condition) -> None:
    # A truthy-looking value must not pass a guard by accident.
    with pytest.raises(errors.InvalidParams) as caught:
        contract.validate_params(Guard, {"condition": condition})

    assert caught.value.field == "condition"
