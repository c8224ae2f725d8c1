"""Test-only node types and builders shared by the suites."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from nodes import errors
from nodes.contract import CostModel, NodeType, RunContext, RunPolicy
from nodes.files import File
from nodes.registry import Registry, default_registry


class Echo(NodeType):
    type = "test.echo"
    description = "Returns its inputs; records when it ran."
    cost = CostModel(per_run=0.5)

    class Params(BaseModel):
        model_config = ConfigDict(extra="allow")

    class Output(BaseModel):
        model_config = ConfigDict(extra="allow")

    runs: ClassVar[list[tuple[str, float]]] = []

    async def run(self, params: Any, ctx: RunContext) -> Any:
        Echo.runs.append((ctx.node_id, time.monotonic()))
        return self.Output(**params.model_dump())


class Fail(NodeType):
    type = "test.fail"
    description = "Fails; transient failures are retried."
    policy = RunPolicy(retries=0, retry_backoff_s=0.01)

    class Params(BaseModel):
        model_config = ConfigDict(extra="allow")
        message: str = "boom"
        transient: bool = False
        after_s: float = 0.0
        succeed_on_attempt: int = 0

    class Output(BaseModel):
        attempt: int

    async def run(self, params: Any, ctx: RunContext) -> Any:
        await asyncio.sleep(params.after_s)
        if params.succeed_on_attempt and ctx.attempt >= params.succeed_on_attempt:
            return self.Output(attempt=ctx.attempt)
        if params.transient:
            raise RuntimeError(params.message)
        raise errors.NodeFailed(params.message)


class Sleep(NodeType):
    type = "test.sleep"
    description = "Sleeps, counting how many sleepers run at once."
    cost = CostModel(per_second=1.0)

    class Params(BaseModel):
        model_config = ConfigDict(extra="allow")
        seconds: float = 0.0

    class Output(BaseModel):
        model_config = ConfigDict(extra="allow")
        slept: float

    concurrent = 0
    peak = 0

    async def run(self, params: Any, ctx: RunContext) -> Any:
        Sleep.concurrent += 1
        Sleep.peak = max(Sleep.peak, Sleep.concurrent)
        try:
            await asyncio.sleep(params.seconds)
        finally:
            Sleep.concurrent -= 1
        return self.Output(slept=params.seconds)


class Blocking(NodeType):
    type = "test.blocking"
    description = "Blocks a worker thread; cooperative ones watch ctx.stop, others ignore it."

    class Params(BaseModel):
        model_config = ConfigDict(extra="allow")
        seconds: float = 5.0
        cooperative: bool = True

    class Output(BaseModel):
        stopped_early: bool

    stopped: ClassVar[list[bool]] = []

    async def run(self, params: Any, ctx: RunContext) -> Any:
        def work() -> bool:
            if not params.cooperative:
                time.sleep(params.seconds)  # deaf to ctx.stop: must not be waited for
                return False
            stopped = ctx.stop.wait(params.seconds)
            Blocking.stopped.append(stopped)
            return stopped

        return self.Output(stopped_early=await ctx.to_thread(work))


class LoopBlocker(NodeType):
    type = "test.loop_blocker"
    description = "Blocks the event loop itself, as a naive synchronous model call inside async code would."

    class Params(BaseModel):
        model_config = ConfigDict(extra="allow")
        seconds: float = 1.0

    class Output(BaseModel):
        blocked: float

    async def run(self, params: Any, ctx: RunContext) -> Any:
        time.sleep(params.seconds)  # on purpose: the loop stops
        return self.Output(blocked=params.seconds)


class Big(NodeType):
    type = "test.big"
    description = "Outputs a text of `chars` characters."

    class Params(BaseModel):
        model_config = ConfigDict(extra="allow")
        chars: int = 1

    class Output(BaseModel):
        text: str

    async def run(self, params: Any, ctx: RunContext) -> Any:
        return self.Output(text="x" * params.chars)


class FileSize(NodeType):
    type = "test.file_size"
    description = "Reads its file through ctx.files: size, sha256, name and content type (and of `more`)."

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")
        file: File
        more: list[File] = []

    class Output(BaseModel):
        size: int
        sha256: str
        name: str
        content_type: str
        more_sizes: list[int]

    async def run(self, params: Any, ctx: RunContext) -> Any:
        assert ctx.files is not None
        digest, size = hashlib.sha256(), 0
        async for chunk in ctx.files.read(params.file):
            digest.update(chunk)
            size += len(chunk)
        return self.Output(size=size, sha256=digest.hexdigest(), name=params.file.name,
                           content_type=params.file.content_type, more_sizes=[f.size for f in params.more])


class FileMake(NodeType):
    type = "test.file_make"
    description = "Stores `text` (repeated `times`) as a file and returns it."

    class Params(BaseModel):
        model_config = ConfigDict(extra="allow")
        text: str = "hello"
        times: int = 1
        name: str = "made.txt"

    class Output(BaseModel):
        label: str
        file: File

    async def run(self, params: Any, ctx: RunContext) -> Any:
        assert ctx.files is not None
        made = await ctx.files.put_bytes((params.text * params.times).encode(), name=params.name,
                                         content_type="text/plain")
        return self.Output(label="made", file=made)


class Chatty(NodeType):
    """Says how far it is, logs a line (with its ``secret`` in it, which must never be seen), streams
    ``words`` as tokens — from the loop, and once from a thread — then waits ``hold`` seconds."""

    type = "test.chatty"
    description = "Reports progress, logs and tokens while it runs."

    class Params(BaseModel):
        model_config = ConfigDict(extra="allow")
        words: list[str] = ["hello", " world"]
        secret: str = ""
        hold: float = 0.0

    class Output(BaseModel):
        text: str

    async def run(self, params: Any, ctx: RunContext) -> Any:
        ctx.progress(0.0, "starting")
        ctx.log(f"using key {params.secret}" if params.secret else "no key")
        for word in params.words:
            ctx.token(word)
        await ctx.to_thread(ctx.progress, 0.5, "from a thread")
        await asyncio.sleep(params.hold)
        ctx.progress(1.0)
        return self.Output(text="".join(params.words))


TEST_TYPES = (Echo, Fail, Sleep, Blocking, LoopBlocker, Big, FileSize, FileMake, Chatty)


def registry_with_test_types() -> Registry:
    registry = default_registry(plugins=False)
    for node_type in TEST_TYPES:
        registry.register(node_type)
    return registry


class FlowBuilder:
    """Builds flow definitions tersely: ``FlowBuilder("f").node("a", "start").edge("a", "b")``."""

    def __init__(self, flow_id: str = "f", **fields: Any) -> None:
        self.data: dict[str, Any] = {"id": flow_id, "nodes": [], "edges": [], **fields}

    def node(self, node_id: str, node_type: str, **settings: Any) -> FlowBuilder:
        self.data["nodes"].append({"id": node_id, "type": node_type, "settings": settings})
        return self

    def edge(self, source: str, target: str, *, output: str | None = None, input: str | None = None) -> FlowBuilder:
        edge: dict[str, Any] = {"from": source, "to": target}
        if output is not None:
            edge["output"] = output
        if input is not None:
            edge["input"] = input
        self.data["edges"].append(edge)
        return self

    def build(self) -> dict[str, Any]:
        return self.data


async def eventually(check: Callable[[], Any], *, timeout: float = 10.0, interval: float = 0.01) -> Any:
    """Poll ``check`` (sync or async) until it returns something truthy, with a deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last value: {value!r})")
        await asyncio.sleep(interval)
