"""A test-only node type that records every run in a file, for tests whose server is a child process.

Each run appends ``start <task_id> <node_id> <attempt> <monotonic_ns> <pid>`` when it begins and
``end …`` (same fields) when it returns, to the file named by ``$GR_TEST_RECORD``. Each line is
one ``os.write`` on an ``O_APPEND`` descriptor, so lines of concurrent nodes never interleave, and
what was written survives a SIGKILL of the process (the kernel holds it; no fsync needed).
``time.monotonic_ns`` is the system-wide CLOCK_MONOTONIC, comparable between processes.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from nodes.contract import NodeType, RunContext

RECORD_ENV = "GR_TEST_RECORD"

_fd: int | None = None


def _write(line: str) -> None:
    global _fd
    if _fd is None:
        _fd = os.open(os.environ[RECORD_ENV], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    data = line.encode()
    written = os.write(_fd, data)
    assert written == len(data), "a short write to a regular file"


class Record(NodeType):
    type = "test.record"
    description = "Sleeps a little; records when it starts and returns in $GR_TEST_RECORD."

    class Params(BaseModel):
        model_config = ConfigDict(extra="allow")
        sleep_s: float = Field(default=0.03, ge=0)

    class Output(BaseModel):
        node: str

    async def run(self, params: Any, ctx: RunContext) -> Any:
        _write(f"start {ctx.task_id} {ctx.node_id} {ctx.attempt} {time.monotonic_ns()} {os.getpid()}\n")
        await asyncio.sleep(params.sleep_s)
        _write(f"end {ctx.task_id} {ctx.node_id} {ctx.attempt} {time.monotonic_ns()} {os.getpid()}\n")
        return self.Output(node=ctx.node_id)


@dataclass(frozen=True)
class Event:
    kind: str  # "start" or "end"
    task_id: int
    node_id: str
    attempt: int
    ns: int
    pid: int


def read_events(path: Path) -> list[Event]:
    """Every complete line of the record file, in file order (a line cut by a crash is skipped)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    events = []
    for line in text.splitlines(keepends=True):
        if not line.endswith("\n"):
            continue
        kind, task_id, node_id, attempt, ns, pid = line.split()
        events.append(Event(kind, int(task_id), node_id, int(attempt), int(ns), int(pid)))
    return events
