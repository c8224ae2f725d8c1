"""YAML request bodies (``PUT /api/v1/flows/{id}``), read as the flows directory reads files, but bounded.

A flows-directory file is trusted; a request body is not. Three things make YAML costlier than
JSON of the same size, and each is bounded here while the document is composed, before any
Python value exists:

- nesting: PyYAML composes recursively, so ``[[[[…`` deep enough is a RecursionError (a 500);
  the same depth limit as JSON bodies applies;
- aliases: ``&a [*b, *b, …]`` chains ("billion laughs") expand exponentially when the flow is
  stored as JSON; the expanded size is counted (each node once, memoised) and capped;
- tags JSON cannot hold (``!!binary``, ``!!set``, non-string keys) are refused, naming where.
"""

from __future__ import annotations

import datetime
from typing import Any

import yaml
from yaml import nodes as yaml_nodes

from graph_runtime.flow import FlowYamlLoader
from http_api import errors

YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")
JSON_SCALARS = (str, int, float, bool, type(None), datetime.date)  # dates are stored as ISO text, as for files


class YamlInvalid(errors.BodyNotJson):
    """The request body is not valid YAML."""

    code = "invalid_yaml"


class _BoundedLoader(FlowYamlLoader):
    """FlowYamlLoader (YAML 1.2 scalars: ids stay strings) that refuses deep or exploding documents."""

    max_depth = 64
    max_values = 1_000_000

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._expanded: dict[int, int] = {}  # id(node) → values it stands for once aliases are expanded

    def compose_node(self, parent: yaml_nodes.Node | None, index: Any) -> yaml_nodes.Node:
        if self.check_event(yaml.AliasEvent):
            anchor = self.peek_event().anchor
            if anchor in self.anchors and id(self.anchors[anchor]) not in self._expanded:
                raise _Refused(f"the alias *{anchor} is inside the node it names (a recursive structure)")
            return super().compose_node(parent, index)  # type: ignore[misc]  # its anchor's node, counted
        self._depth += 1
        if self._depth > self.max_depth:
            raise _Refused(f"the body nests deeper than {self.max_depth} levels")
        try:
            node = super().compose_node(parent, index)  # type: ignore[misc]
        finally:
            self._depth -= 1
        self._expanded[id(node)] = 1 + sum(self._expanded[id(child)] for child in _children(node))
        if self._expanded[id(node)] > self.max_values:
            raise _Refused(f"the body expands (through its aliases) to more than {self.max_values} values")
        return node


class _Refused(Exception):
    """A limit of _BoundedLoader (kept apart from yaml.YAMLError: its message needs no position)."""


def _children(node: yaml_nodes.Node) -> list[yaml_nodes.Node]:
    if isinstance(node, yaml_nodes.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml_nodes.SequenceNode):
        return list(node.value)
    return []


def load_object(raw: bytes, *, max_depth: int, max_values: int) -> dict[str, Any]:
    """The body as a mapping of JSON values; blocking (PyYAML is pure Python here): run it in a thread.

    Raises:
        YamlInvalid: not YAML, not UTF-8, or past a limit (400).
        errors.BodyNotObject: valid YAML that is not a mapping (400).
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise YamlInvalid(f"the body is not UTF-8: {exc}") from None
    loader = _BoundedLoader(text)
    loader.max_depth, loader.max_values = max_depth, max_values
    try:
        data = loader.get_single_data()
    except _Refused as exc:
        raise YamlInvalid(str(exc)) from None
    except yaml.YAMLError as exc:
        raise YamlInvalid(f"the body is not valid YAML: {exc}") from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise errors.BodyNotObject(f"the body must be a YAML mapping, not {type(data).__name__}")
    _check_json(data)
    return data


def _check_json(data: dict[str, Any]) -> None:
    """Refuse what JSON cannot hold; integer keys become strings (``1607:`` is the key "1607")."""
    stack: list[tuple[Any, str]] = [(data, "")]
    while stack:
        value, path = stack.pop()
        if isinstance(value, dict):
            for key in list(value):
                if isinstance(key, int) and not isinstance(key, bool) and str(key) not in value:
                    value[str(key)] = value.pop(key)
                    key = str(key)
                if not isinstance(key, str):
                    raise YamlInvalid(f"{path or 'the body'} has a {type(key).__name__} key {key!r}; keys are "
                                      "strings", field=path or None)
                stack.append((value[key], f"{path}.{key}" if path else key))
        elif isinstance(value, list):
            stack.extend((item, f"{path}.{i}") for i, item in enumerate(value))
        elif not isinstance(value, JSON_SCALARS):
            raise YamlInvalid(f"{path} is a YAML {type(value).__name__}, which JSON cannot hold", field=path)
