"""Typed inputs (SPEC §9): a flow's JSON Schemas for its start nodes' ``data``.

Checked twice: the schemas themselves when the flow is loaded (:func:`schema_problems`), and the
merged ``data`` of each start node a request runs (:func:`check`), before anything is queued.
``data`` is checked as sent, before ``$secret``/``$file`` values are resolved.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Iterator, Mapping
from typing import Any

import jsonschema
import jsonschema.exceptions
import jsonschema.protocols
import referencing
import referencing.exceptions

from graph_runtime import errors
from graph_runtime.flow import Flow


def schema_problems(flow: Flow) -> list[str]:
    """Load problems of ``flow.inputs``: its shape, the nodes it names and each schema's validity."""
    if not flow.inputs:  # absent, or {}: the schema that accepts anything
        return []
    starts = [node.id for node in flow.nodes if node.type == "start"]
    if not starts:
        return ["inputs: the flow has no node of type 'start' to type"]
    schemas = flow.input_schemas
    if not schemas:
        return [f"inputs: the flow has {len(starts)} start nodes ({', '.join(starts)}); "
                f"key inputs by start node id, e.g. {{{starts[0]!r}: {{type: object}}}}"]
    keyed = all(key in starts for key in flow.inputs)
    problems = []
    for node_id, schema in schemas.items():
        where = f"inputs.{node_id}" if keyed else "inputs"
        problems += [f"{where}: {problem}" for problem in _one_schema_problems(schema)]
    return problems


def _one_schema_problems(schema: Any) -> list[str]:
    if not isinstance(schema, Mapping):
        return [f"a JSON Schema must be an object, not {type(schema).__name__}"]
    cls = _validator_class(schema)
    if cls is None:
        return [f"$schema {schema['$schema']!r} is not a JSON Schema draft this server knows"]
    remote = sorted(ref for ref in _refs(schema) if not ref.startswith("#"))
    if remote:
        return [f"$ref {remote[0]!r}: only references inside the schema ('#/...') are allowed"]
    try:
        cls.check_schema(schema)
    except jsonschema.exceptions.SchemaError as exc:
        path = ".".join(str(p) for p in exc.absolute_path)
        return [f"not a valid JSON Schema{f' at {path}' if path else ''}: {exc.message}"]
    kind = schema.get("type", "object")
    if kind != "object" and not (isinstance(kind, list) and "object" in kind):
        return [f"a start node's data is an object; the schema's type is {kind!r}"]
    try:  # a trial on {} finds a dangling $ref or one that refers to itself without end
        cls(schema, registry=referencing.Registry()).is_valid({})
    except (referencing.exceptions.Unresolvable, RecursionError) as exc:
        return [f"the schema cannot be used: {_unusable(exc)}"]
    return []


def _unusable(exc: Exception) -> str:
    return "a $ref refers to itself without end" if isinstance(exc, RecursionError) else str(exc)


def _validator_class(schema: Mapping[str, Any]) -> type[jsonschema.protocols.Validator] | None:
    """The draft ``$schema`` names (the latest without one); None for an unknown ``$schema``."""
    if "$schema" not in schema:
        return jsonschema.validators.validator_for(schema)
    if not isinstance(schema["$schema"], str):
        return None
    # default=None: an unknown $schema is refused, not validated by the latest draft with a warning.
    return jsonschema.validators.validator_for(schema, default=None)


def _refs(value: Any) -> Iterator[str]:
    """Every ``$ref`` string inside a schema."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            if key == "$ref" and isinstance(item, str):
                yield item
            else:
                yield from _refs(item)
    elif isinstance(value, list):
        for item in value:
            yield from _refs(item)


def validator(flow: Flow, node_id: str) -> jsonschema.protocols.Validator | None:
    """The compiled validator of ``node_id``'s schema (kept in the flow's memo), or None."""
    schema = flow.input_schemas.get(node_id)
    if schema is None:
        return None
    key = ("inputs", node_id)
    found = flow.memo.get(key)
    if found is None:
        cls = _validator_class(schema)
        assert cls is not None, "validation refused this schema at load"
        # An empty registry: a $ref is never fetched over the network (jsonschema's default would).
        found = flow.memo[key] = cls(schema, format_checker=cls.FORMAT_CHECKER, registry=referencing.Registry())
    return found


def check(flow: Flow, run_set: Iterable[str], settings: Mapping[str, Mapping[str, Any]]) -> None:
    """Validate the merged ``data`` of each typed start node in ``run_set``.

    Raises:
        errors.InvalidSettings: naming ``node_settings.<start>.data.<path>`` of the most relevant
            error (jsonschema's ``best_match``).
    """
    for node_id in run_set:
        found = validator(flow, node_id)
        if found is None:
            continue
        data = settings[node_id].get("data", {})
        try:
            error = jsonschema.exceptions.best_match(found.iter_errors(data))
        except (referencing.exceptions.Unresolvable, RecursionError) as exc:
            raise errors.InvalidSettings(f"node {node_id!r}: the flow's inputs schema cannot be used: {_unusable(exc)}",
                                         node_id=node_id, field=f"node_settings.{node_id}.data") from None
        if error is not None:
            path, message = _where(error)
            field = ".".join(["node_settings", node_id, "data", *path])
            shown = ".".join(path) or "data"
            raise errors.InvalidSettings(f"node {node_id!r} input {shown!r}: {message}", node_id=node_id, field=field)


def _where(error: jsonschema.exceptions.ValidationError) -> tuple[list[str], str]:
    """The path of the offending value, down to the missing or unexpected key when there is one."""
    path = [str(p) for p in error.absolute_path]
    instance = error.instance
    if error.validator == "required" and isinstance(instance, Mapping):
        missing = _first(name for name in error.validator_value if name not in instance)
        if missing is not None:
            return [*path, missing], "is required"
    if error.validator == "additionalProperties" and isinstance(instance, Mapping):
        extra = _first(_unexpected(instance, error.schema))
        if extra is not None:
            known = sorted(error.schema.get("properties", {}))
            return [*path, extra], f"is not an input of this flow (known: {', '.join(known) or 'none'})"
    return path, _short(error.message)


_MESSAGE_CHARS = 300


def _short(message: str) -> str:
    # jsonschema quotes the offending value whole: a megabyte string must not come back in a 422.
    return message if len(message) <= _MESSAGE_CHARS else message[:_MESSAGE_CHARS] + "…"


def _unexpected(instance: Mapping[str, Any], schema: Mapping[str, Any]) -> Iterable[str]:
    properties: Collection[str] = schema.get("properties", {})
    patterns = list(schema.get("patternProperties", {}))
    return (key for key in instance if key not in properties and not any(re.search(p, key) for p in patterns))


def _first(values: Iterable[str]) -> str | None:
    return next(iter(values), None)
