"""Which parameters of a node type take files (SPEC §7 "Files"), computed once per type.

A parameter takes files when its annotation is one of :class:`nodes.files.File`,
``File | None``, ``list[File]`` or ``dict[str, File]`` (each optionally ``| None``). Wherever one
does, a request may give a file value (``{"$file": id}`` is enough) or an ``http(s)`` URL string:
the runtime fetches the URL and completes the value before the node runs. Files nested deeper
(inside another model) are not looked for: declare them at the top of ``Params``.
"""

from __future__ import annotations

import enum
import functools
import types
import typing
from collections.abc import Iterator, Mapping
from typing import Any

from pydantic import BaseModel

from nodes.files import FILE_KEY, File

URL_PLACEHOLDER = {FILE_KEY: "url"}
"""What a URL string stands for while parameters are validated before it is fetched."""


class Shape(enum.Enum):
    """How a file parameter holds its files."""

    ONE = "one"  # File or File | None
    LIST = "list"  # list[File]
    DICT = "dict"  # dict[str, File]


def _without_none(annotation: Any) -> Any:
    """``X`` for ``X | None`` (or ``Optional[X]``); anything else as it is."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        rest = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        return rest[0] if len(rest) == 1 else annotation
    return annotation


def shape_of(annotation: Any) -> Shape | None:
    """The :class:`Shape` of a parameter annotated ``annotation``, or None when it takes no files."""
    annotation = _without_none(annotation)
    if annotation is File:
        return Shape.ONE
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is list and args == (File,):
        return Shape.LIST
    if origin is dict and len(args) == 2 and args[1] is File:
        return Shape.DICT
    return None


@functools.cache
def file_params(params_model: type[BaseModel]) -> Mapping[str, Shape]:
    """The parameters of ``params_model`` that take files, by name (cached: once per type)."""
    found = {name: shape_of(info.annotation) for name, info in params_model.model_fields.items()}
    return types.MappingProxyType({name: shape for name, shape in found.items() if shape is not None})


def is_url(value: Any) -> bool:
    """Whether ``value`` is an ``http(s)`` URL string, which a file parameter accepts in place of a file."""
    return isinstance(value, str) and value[:8].lower().startswith(("http://", "https://"))


def slots(params: Mapping[str, Any], shapes: Mapping[str, Shape]) -> Iterator[tuple[str, Any]]:
    """Every ``(dotted path, value)`` that holds (or should hold) one file, in parameter order.

    ``images.1`` is the second item of a ``list[File]`` parameter, ``files.photo`` the ``photo``
    entry of a ``dict[str, File]`` one. Values of the wrong container type are skipped: the
    parameter model refuses them with its own message.
    """
    for name, shape in shapes.items():
        value = params.get(name)
        if value is None:
            continue
        if shape is Shape.ONE:
            yield name, value
        elif shape is Shape.LIST and isinstance(value, list):
            yield from ((f"{name}.{i}", item) for i, item in enumerate(value))
        elif shape is Shape.DICT and isinstance(value, dict):
            yield from ((f"{name}.{key}", item) for key, item in value.items())


def replace_slots(params: Mapping[str, Any], shapes: Mapping[str, Shape], new: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``params`` with the slot at each path of ``new`` (from :func:`slots`) replaced."""
    out = dict(params)
    for name, shape in shapes.items():
        value = params.get(name)
        if shape is Shape.ONE and name in new:
            out[name] = new[name]
        elif shape is Shape.LIST and isinstance(value, list):
            out[name] = [new.get(f"{name}.{i}", item) for i, item in enumerate(value)]
        elif shape is Shape.DICT and isinstance(value, dict):
            out[name] = {key: new.get(f"{name}.{key}", item) for key, item in value.items()}
    return out


def with_url_placeholders(params: Mapping[str, Any], shapes: Mapping[str, Shape]) -> Mapping[str, Any]:
    """``params`` with each URL in a file slot standing in as a file value, for validation before the fetch."""
    urls = {path: URL_PLACEHOLDER for path, value in slots(params, shapes) if is_url(value)}
    return replace_slots(params, shapes, urls) if urls else params
