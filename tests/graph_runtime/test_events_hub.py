"""The events hub between two processes' worth of hubs on one real SQLite file: one writes a task's
events, the other's subscribers — joining early, late, and with Last-Event-ID — each see every
event after their start exactly once, in order, and stop at the final one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from graph_runtime.commits import GroupCommitter
from graph_runtime.events import EventHub, EventKind
from graph_runtime.models import Lease, Task, TaskRequest, TaskStatus
from storage import engine as storage_engine
from storage.repository import Repository
from storage.task_events import TaskEventLog
from tests.support import FlowBuilder


@pytest.fixture
async def repo(db_url: str) -> AsyncIterator[Repository]:
    engine = storage_engine.create_engine(db_url)
    repository = Repository(engine)
    from graph_runtime.flow import parse

    await repository.save_flow(parse(FlowBuilder("f").node("s", "start").node("e", "end").edge("s", "e").build()))
    yield repository
    await storage_engine.dispose(engine)


async def _collect(hub: EventHub, task_id: int, after: int = 0) -> list[int]:
    return [event.seq async for event in hub.subscribe(task_id, after)]


async def test_subscribers_in_another_process_see_each_event_once_in_order(repo: Repository) -> None:
    created, _ = await repo.create_task("f", 1, TaskRequest("s", "e", "e"))
    claimed = await repo.claim_task(created.id, "w1", 60)
    assert claimed is not None and claimed.lease is not None
    writer = EventHub(GroupCommitter(repo), TaskEventLog(repo.engine))
    reader = EventHub(GroupCommitter(repo), TaskEventLog(repo.engine), poll_s=0.01)
    try:
        await writer.task_started(claimed)  # seq 1
        early = [asyncio.ensure_future(_collect(reader, claimed.id)) for _ in range(3)]
        resumed = asyncio.ensure_future(_collect(reader, claimed.id, after=1))
        late: list[asyncio.Future[list[int]]] = []
        for step in range(40):
            writer.node_said(claimed.id, EventKind.PROGRESS, {"node_id": "s", "fraction": step / 40})
            if step % 8 == 0:
                await writer.flush()
                await asyncio.sleep(0.02)
                late.append(asyncio.ensure_future(_collect(reader, claimed.id, after=step // 2)))
        ended = Task(claimed.id, "f", 1, claimed.request, TaskStatus.SUCCEEDED, lease=Lease("w1", claimed.claims),
                     claims=claimed.claims, finished=datetime.now(UTC))
        await writer.task_stopped(ended)  # the final event: seq 42
        everything = list(range(1, 43))
        for reading in early:
            assert await asyncio.wait_for(reading, 10) == everything
        assert await asyncio.wait_for(resumed, 10) == everything[1:]
        for index, reading in enumerate(late):
            assert await asyncio.wait_for(reading, 10) == everything[(index * 8) // 2:], index
    finally:
        await writer.close()
        await reader.close()
