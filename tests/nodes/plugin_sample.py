"""A third-party node type package, as a plugin author would write it (loaded by entry point)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from nodes.contract import NodeType, RunContext
from nodes.registry import Registry


class Shout(NodeType):
    """Upper-cases a text."""

    type = "acme.shout"
    description = "Upper-cases a text."

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")
        text: str

    class Output(BaseModel):
        text: str

    async def run(self, params: Params, ctx: RunContext) -> Output:
        return self.Output(text=params.text.upper())


class Whisper(NodeType):
    """Lower-cases a text."""

    type = "acme.whisper"
    description = "Lower-cases a text."

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")
        text: str

    class Output(BaseModel):
        text: str

    async def run(self, params: Params, ctx: RunContext) -> Output:
        return self.Output(text=params.text.lower())


def register(registry: Registry) -> None:
    """The callable entry-point form: registers every type of the package."""
    registry.register(Whisper)
