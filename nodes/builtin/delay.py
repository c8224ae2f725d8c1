"""The ``delay`` node type: waits, then passes a value on."""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from nodes.contract import NodeType, RunContext


class Delay(NodeType):
    """Sleeps for some seconds, then outputs its value."""

    type = "delay"
    description = (
        "Waits for seconds (0 to 3600), then outputs {value}. Its timeout is never shorter "
        "than its own wait."
    )

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")

        seconds: float = Field(ge=0, le=3600, description="How long to wait.")
        value: Any = Field(None, description="Passed through unchanged.")

    class Output(BaseModel):
        value: Any

    async def run(self, params: Params, ctx: RunContext) -> Output:
        """Sleep ``seconds``, then return ``{value}``."""
        await asyncio.sleep(params.seconds)
        return self.Output(value=params.value)

    def min_timeout(self, params: Params) -> float:
        """A second more than the wait, so the delay itself never times out."""
        return params.seconds + 1
