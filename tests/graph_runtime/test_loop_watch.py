"""A node that blocks the event loop is named in the log (``action: loop_blocked``), and runs once."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest

from graph_runtime.executor import Executor
from graph_runtime.flow import parse
from graph_runtime.models import TaskRequest, TaskStatus
from graph_runtime.scheduler import Scheduler
from storage import engine as storage_engine
from storage.repository import Repository
from tests.support import FlowBuilder, eventually, registry_with_test_types


@pytest.fixture
async def repo(db_url: str) -> AsyncIterator[Repository]:
    engine = storage_engine.create_engine(db_url)
    repository = Repository(engine)
    await repository.save_flow(parse(FlowBuilder("stall").node("hog", "test.loop_blocker", seconds=1.2).build()))
    yield repository
    await storage_engine.dispose(engine)


async def test_a_loop_blocking_node_is_logged_by_name(repo: Repository, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="graph_runtime.loop_watch")
    task, _ = await repo.create_task("stall", 1, TaskRequest("hog", "hog", "hog"))
    scheduler = Scheduler(repo, Executor(repo, registry_with_test_types()), poll_interval_s=0.05,
                          loop_blocked_s=0.5)
    await scheduler.start()
    try:
        done = await eventually(lambda: _ended(repo, task.id), timeout=20)
    finally:
        await scheduler.stop()
    assert done.status is TaskStatus.SUCCEEDED and done.nodes["hog"].attempts == 1
    blocked = [r for r in caplog.records if getattr(r, "action", None) == "loop_blocked"]
    assert len(blocked) == 1, [r.getMessage() for r in caplog.records]
    assert blocked[0].node_id == "hog" and blocked[0].task_id == task.id  # type: ignore[attr-defined]
    assert f"task {task.id} node 'hog'" in blocked[0].getMessage()
    assert any(getattr(r, "action", None) == "loop_unblocked" for r in caplog.records)


async def _ended(repo: Repository, task_id: int):  # type: ignore[no-untyped-def]
    task = await repo.get_task(task_id)
    return task if task.status.ended else None
