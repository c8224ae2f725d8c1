"""Which parameters take files, and URLs standing in for files while parameters are checked."""

from __future__ import annotations

from typing import Optional

import pytest
from pydantic import BaseModel

from nodes import contract, errors, file_params
from nodes.file_params import Shape
from nodes.files import File


class Params(BaseModel):
    one: File
    maybe: File | None = None
    old_style: Optional[File] = None  # noqa: UP045 — the spelling plugins written for 3.9 use
    many: list[File] = []
    named: dict[str, File] | None = None
    text: str = ""
    numbers: list[int] = []


class Takes(contract.NodeType):
    type = "test.takes_files"
    Params = Params
    Output = Params


def test_file_parameters_are_found_by_their_annotation_once_per_model() -> None:
    shapes = file_params.file_params(Params)
    assert dict(shapes) == {"one": Shape.ONE, "maybe": Shape.ONE, "old_style": Shape.ONE, "many": Shape.LIST,
                            "named": Shape.DICT}
    assert file_params.file_params(Params) is shapes


def test_slots_name_each_file_by_its_path() -> None:
    params = {"one": {"$file": "a"}, "many": ["http://x/1", {"$file": "b"}], "named": {"k": {"$file": "c"}}}
    assert list(file_params.slots(params, file_params.file_params(Params))) == [
        ("one", {"$file": "a"}), ("many.0", "http://x/1"), ("many.1", {"$file": "b"}), ("named.k", {"$file": "c"})]


def test_a_url_where_a_file_goes_is_valid_before_it_is_fetched() -> None:
    model = contract.validate_params(Takes, {"one": "https://example.com/a.jpg", "many": ["HTTP://example.com/b"]})
    assert isinstance(model, Params) and model.one.id == "url" and model.many[0].id == "url"


@pytest.mark.parametrize(("params", "field"), [
    ({"one": "ftp://example.com/a.jpg"}, "one"),
    ({"one": {"$file": "a"}, "many": ["not a url"]}, "many.0"),
    ({"one": {"$file": "a"}, "text": "https://example.com"}, None),  # a URL where no file goes stays text
])
def test_anything_else_is_checked_by_the_model(params: dict[str, object], field: str | None) -> None:
    if field is None:
        assert contract.validate_params(Takes, params).text == "https://example.com"  # type: ignore[union-attr]
        return
    with pytest.raises(errors.InvalidParams) as caught:
        contract.validate_params(Takes, params)
    assert caught.value.field == field
