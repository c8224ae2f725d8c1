"""A test-only node type that takes its whole process down, for the crash-loop test (issue 8).

``test.crash`` SIGKILLs the process it runs in while the file named by its ``marker`` parameter
exists (as the kernel's OOM killer would), and returns ``{"survived": true}`` otherwise.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from nodes.contract import NodeType, RunContext


class Crash(NodeType):
    type = "test.crash"
    description = "SIGKILLs its own process while the marker file exists."

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")
        marker: str

    class Output(BaseModel):
        survived: bool

    async def run(self, params: Any, ctx: RunContext) -> Any:
        if Path(params.marker).exists():
            os.kill(os.getpid(), signal.SIGKILL)
        return self.Output(survived=True)
