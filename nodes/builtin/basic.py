"""Small core node types: ``start``, ``end``, ``constant``, ``pick``, ``merge`` and ``guard``."""

from __future__ import annotations

from typing import Any

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from nodes import errors
from nodes.contract import NodeType, RunContext


class _Open(BaseModel):
    """An object whose keys are whatever the node puts in it."""

    model_config = ConfigDict(extra="allow")


class Start(NodeType):
    """The entry of a flow: outputs its ``data`` (the flow's input) as its output object."""

    type = "start"
    description = (
        "The flow's entry point. Its output is its data object, so each key of data is an "
        "output other nodes can link to."
    )

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")

        data: dict[str, Any] = Field(default_factory=dict, description="The flow's input.")

    class Output(_Open):
        """The keys of ``data``."""

    async def run(self, params: Params, ctx: RunContext) -> Output:
        """Return ``data`` as the output object."""
        return self.Output.model_validate(params.data)


class End(NodeType):
    """The exit of a flow: outputs its inputs, keyed by input name."""

    type = "end"
    description = "The flow's exit point. Its output is an object of its inputs by input name."

    class Params(_Open):
        """Any inputs."""

    class Output(_Open):
        """The inputs, by input name."""

    async def run(self, params: Params, ctx: RunContext) -> Output:
        """Return the inputs as the output object."""
        return self.Output.model_validate(params.model_extra or {})


class Constant(NodeType):
    """Outputs a fixed value."""

    type = "constant"
    description = "Outputs its value parameter unchanged, as {value}."

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")

        value: Any = Field(description="Any JSON value, null included.")

    class Output(BaseModel):
        value: Any

    async def run(self, params: Params, ctx: RunContext) -> Output:
        """Return ``{value}``."""
        return self.Output(value=params.value)


class Pick(NodeType):
    """Outputs the part of a value found at a dotted path."""

    type = "pick"
    deterministic = True
    description = (
        "Outputs {value} found at a dotted path inside its value parameter: object keys and "
        "list indexes, e.g. 'items.0.name' (negative indexes count from the end)."
    )

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")

        value: Any = Field(description="The object or list to look inside.")
        path: str = Field(min_length=1, description="Dotted path such as 'a.b.0.c'.")

        @pydantic.field_validator("path")
        @classmethod
        def _no_empty_segment(cls, path: str) -> str:
            if "" in path.split("."):
                raise ValueError("path has an empty segment")
            return path

    class Output(BaseModel):
        value: Any

    async def run(self, params: Params, ctx: RunContext) -> Output:
        """Walk ``path`` into ``value``.

        Raises:
            errors.NodeFailed: a key or index is missing, naming the segment and where.
        """
        current = params.value
        walked: list[str] = []
        for segment in params.path.split("."):
            current = _step(current, segment, ".".join(walked) or "the value")
            walked.append(segment)
        return self.Output(value=current)


def _step(current: Any, segment: str, where: str) -> Any:
    """``current[segment]``, with keys for objects and integer indexes for lists."""
    if isinstance(current, dict):
        if segment not in current:
            raise errors.NodeFailed(f"pick: no key {segment!r} in the object at {where}")
        return current[segment]
    if isinstance(current, (list, tuple)):
        try:
            return current[int(segment)]
        except ValueError:
            raise errors.NodeFailed(
                f"pick: {segment!r} is not a list index (the value at {where} is a list)"
            ) from None
        except IndexError:
            raise errors.NodeFailed(
                f"pick: index {segment} is out of range at {where} (length {len(current)})"
            ) from None
    raise errors.NodeFailed(
        f"pick: cannot look up {segment!r} in the {type(current).__name__} at {where}"
    )


class Merge(NodeType):
    """Merges its inputs into one object."""

    type = "merge"
    deterministic = True
    description = (
        "Merges its inputs into one object, in input-name order: object inputs are merged "
        "key by key (later names win), any other input is put under its input name."
    )

    class Params(_Open):
        """Any inputs."""

    class Output(_Open):
        """The merged keys."""

    async def run(self, params: Params, ctx: RunContext) -> Output:
        """Merge the inputs, sorted by input name."""
        merged: dict[str, Any] = {}
        inputs = params.model_extra or {}
        for name in sorted(inputs):
            value = inputs[name]
            if isinstance(value, dict):
                merged.update(value)
            else:
                merged[name] = value
        return self.Output.model_validate(merged)


def _bool_text(value: Any) -> Any:
    # Conditions often come from a template, whose output is text: accept exactly
    # "true"/"false" (any case, surrounding blanks ignored) and leave the rest to strict bool.
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return value


class Guard(NodeType):
    """Fails the task with a message unless a condition holds."""

    type = "guard"
    description = (
        "Outputs {ok: true} when condition is true, and otherwise fails with message (not "
        "retried). condition must be a boolean or the text 'true'/'false'."
    )

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")

        condition: bool = Field(
            strict=True, description="A boolean, or the text 'true'/'false' in any case."
        )
        message: str = Field("guard condition is false", description="The failure message.")

        @pydantic.field_validator("condition", mode="before")
        @classmethod
        def _accept_bool_text(cls, value: Any) -> Any:
            return _bool_text(value)

    class Output(BaseModel):
        ok: bool

    async def run(self, params: Params, ctx: RunContext) -> Output:
        """Return ``{ok: true}``.

        Raises:
            errors.GuardFailed: the condition is false.
        """
        if not params.condition:
            raise errors.GuardFailed(params.message)
        return self.Output(ok=True)
