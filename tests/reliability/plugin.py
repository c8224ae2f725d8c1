"""Test-only node types for the reliability tests, installed as a plugin (an entry point in the
``graph_runtime.nodes`` group) so the real console script loads them in every API and worker
process, as a user's own node package would be.

Each run appends ``start``/``end`` lines to ``$GR_TEST_RECORD`` (the format of ``tests/recording.py``),
so a test can count how many times each (task, node) started and in which process.
"""

from __future__ import annotations

import os
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from nodes.contract import NodeType, RunContext
from nodes.registry import Registry
from tests.recording import Record
from tests.recording import _write as record


def _line(kind: str, ctx: RunContext) -> str:
    return f"{kind} {ctx.task_id} {ctx.node_id} {ctx.attempt} {time.monotonic_ns()} {os.getpid()}\n"


class _Sleeping(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seconds: float = Field(ge=0)


class _Slept(BaseModel):
    node: str


class BlockLoop(NodeType):
    """What a naive ``model.generate()`` inside ``async def run`` does: the whole event loop stops."""

    type = "test.block_loop"
    description = "An async run that calls time.sleep: blocks its process's event loop for `seconds`."
    Params = _Sleeping
    Output = _Slept

    async def run(self, params: Any, ctx: RunContext) -> Any:
        record(_line("start", ctx))
        time.sleep(params.seconds)  # on purpose: this is the blocking call under test
        record(_line("end", ctx))
        return _Slept(node=ctx.node_id)


class SyncSleep(NodeType):
    """A plain ``def run``: the executor calls it on a thread (SPEC §10), so the loop stays free."""

    type = "test.sync_sleep"
    description = "A synchronous run that sleeps `seconds` (on the executor's thread)."
    Params = _Sleeping
    Output = _Slept

    def run(self, params: Any, ctx: RunContext) -> Any:  # type: ignore[override]
        record(_line("start", ctx))
        time.sleep(params.seconds)
        record(_line("end", ctx))
        return _Slept(node=ctx.node_id)


def register(registry: Registry) -> None:
    """The entry point: the recording types of ``tests/`` and this file's two."""
    for node_type in (Record, BlockLoop, SyncSleep):
        registry.register(node_type)
