"""A node type whose ``run`` is a plain ``def`` runs on a thread (SPEC §10): blocking code in it never
freezes the event loop that serves the API and the other tasks."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from graph_runtime.executor import Executor
from graph_runtime.flow import parse
from graph_runtime.models import TaskRequest, TaskStatus
from nodes.contract import NodeType, RunContext
from storage import engine as storage_engine
from storage.repository import Repository
from tests.support import FlowBuilder, registry_with_test_types


class SyncSleep(NodeType):
    """Sleeps with time.sleep (what a careless plugin, or a C library call, does)."""

    type = "test.sync_sleep"

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")
        seconds: float

    class Output(BaseModel):
        slept: float

    def run(self, params: Params, ctx: RunContext) -> Output:  # type: ignore[override]
        started = time.perf_counter()
        time.sleep(params.seconds)
        return self.Output(slept=round(time.perf_counter() - started, 3))


@pytest.fixture
async def repo(db_url: str) -> AsyncIterator[Repository]:
    engine = storage_engine.create_engine(db_url)
    repository = Repository(engine)
    await repository.save_flow(parse(FlowBuilder("blocks").node("b", "test.sync_sleep", seconds=0.5).build()))
    yield repository
    await storage_engine.dispose(engine)


async def test_a_sync_run_happens_off_the_loop(repo: Repository) -> None:
    registry = registry_with_test_types()
    registry.register(SyncSleep)
    executor = Executor(repo, registry)
    task, _ = await repo.create_task("blocks", 1, TaskRequest("b", "b", "b"))
    claimed = await repo.claim_task(task.id, "w", lease_s=30)
    assert claimed is not None
    gaps: list[float] = []

    async def ticker() -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.01)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    ticking = asyncio.create_task(ticker())
    try:
        done: Any = await executor.execute(claimed)
    finally:
        ticking.cancel()
    assert done.status is TaskStatus.SUCCEEDED and done.result["slept"] >= 0.5
    assert len(gaps) > 20 and max(gaps) < 0.25, f"the loop stalled for {max(gaps):.3f}s"
