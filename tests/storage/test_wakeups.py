"""On PostgreSQL, a task queued by another process wakes an idle worker at once (LISTEN/NOTIFY),
not at its next poll."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import asyncpg
import pytest

from graph_runtime.commits import GroupCommitter
from graph_runtime.events import EventHub
from graph_runtime.executor import Executor
from graph_runtime.flow import parse
from graph_runtime.models import TaskRequest, TaskStatus
from graph_runtime.scheduler import Scheduler
from storage import event_data
from storage.repository import Repository
from storage.task_events import TaskEventLog
from storage.wakeups import ENDED_CHANNEL, pg_endings, pg_wakeups
from tests.support import FlowBuilder, eventually, registry_with_test_types

pytestmark = pytest.mark.postgres


@pytest.fixture(params=[pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str:
    return request.getfixturevalue("postgres_url")


async def test_a_task_queued_elsewhere_starts_long_before_the_next_poll(
        make_repository: Callable[[], Repository]) -> None:
    worker_repo, api_repo = make_repository(), make_repository()  # two engines: two processes' connections
    await api_repo.save_flow(parse(FlowBuilder("one").node("s", "start", data={"x": 1}).build()))
    wakeups = pg_wakeups(worker_repo.engine)
    assert wakeups is not None
    # A poll every 30 s: only the notification can start the task within the test's seconds.
    scheduler = Scheduler(worker_repo, Executor(worker_repo, registry_with_test_types()), poll_interval_s=30,
                          wakeups=wakeups)
    await scheduler.start()
    try:
        queued = time.monotonic()
        task, _ = await api_repo.create_task("one", 1, TaskRequest("s", "s", "s"), node_ids=["s"])

        async def ended() -> object:
            found = await api_repo.get_task(task.id)
            return found if found.status.ended else None

        done = await eventually(ended, timeout=10, interval=0.01)
        took = time.monotonic() - queued
    finally:
        await scheduler.stop()
    assert done.status is TaskStatus.SUCCEEDED  # type: ignore[attr-defined]
    assert took < 3.0, f"the idle worker took {took:.2f}s to run a task queued elsewhere"


async def test_sqlite_has_no_wakeups_and_no_end_notices(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import storage

    engine = storage.create_engine(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
    try:
        assert pg_wakeups(engine) is None
        assert pg_endings(engine, "me") is None
    finally:
        await storage.dispose(engine)


async def test_an_idle_worker_sends_at_most_one_query_a_second(make_repository: Callable[[], Repository]) -> None:
    import sqlalchemy as sa

    repo = make_repository()
    statements: list[str] = []
    sa.event.listen(repo.engine.sync_engine, "before_cursor_execute",
                    lambda conn, cursor, statement, *_: statements.append(statement))
    scheduler = Scheduler(repo, Executor(repo, registry_with_test_types()), poll_interval_s=1.0, lease_s=10,
                          wakeups=pg_wakeups(repo.engine))
    await scheduler.start()
    try:
        statements.clear()
        await asyncio.sleep(6.0)
        sent = list(statements)
    finally:
        await scheduler.stop()
    assert len(sent) <= 6, f"{len(sent)} queries in 6 s while idle: {sent}"


async def test_a_wait_for_a_task_another_process_runs_answers_at_its_end_not_at_the_next_poll(
        make_repository: Callable[[], Repository]) -> None:
    """An API process's ``?wait`` (the hub's ``wait_ended``) on a task a worker elsewhere runs: the
    end's NOTIFY wakes its poll. With a poll every 30 s, only the notice answers within the test."""
    worker_repo, api_repo = make_repository(), make_repository()  # two engines: two processes' connections
    await api_repo.save_flow(parse(FlowBuilder("one").node("s", "start", data={"x": 1}).build()))
    api_hub = EventHub(GroupCommitter(api_repo), TaskEventLog(api_repo.engine), poll_s=30,
                       endings=pg_endings(api_repo.engine, "api-process"))
    worker_hub = EventHub(GroupCommitter(worker_repo), TaskEventLog(worker_repo.engine))
    executor = Executor(worker_repo, registry_with_test_types(), events=worker_hub,
                        committer=GroupCommitter(worker_repo))
    scheduler = Scheduler(worker_repo, executor, poll_interval_s=30, wakeups=pg_wakeups(worker_repo.engine))
    try:
        task, _ = await api_repo.create_task("one", 1, TaskRequest("s", "s", "s"), node_ids=["s"])
        waiting = asyncio.ensure_future(api_hub.wait_ended(task.id, 20))
        await asyncio.sleep(0.5)  # its first poll found nothing; the next is 30 s away
        await scheduler.start()  # the worker "elsewhere" claims and runs it
        final = await asyncio.wait_for(waiting, 10)
        assert final is not None and final.final
        assert event_data.decode(final.kind, final.data).status is TaskStatus.SUCCEEDED  # type: ignore[union-attr]
    finally:
        await scheduler.stop()
        await worker_hub.close()
        await api_hub.close()


async def test_only_ends_someone_waits_for_elsewhere_are_announced(make_repository: Callable[[], Repository]) -> None:
    """A NOTIFY in a writing transaction holds a database-wide lock through the commit: a task's end
    notifies only when another process waits for it (``PgEndings.watch``, or named the watcher as
    it created the task), never for every end nor for the process that ends it."""
    repo = make_repository()
    await repo.save_flow(parse(FlowBuilder("one").node("s", "start", data={"x": 1}).build()))
    heard: list[str] = []
    listener = await asyncpg.connect(repo.engine.url.set(drivername="postgresql").render_as_string(hide_password=False))
    await listener.add_listener(ENDED_CHANNEL, lambda *args: heard.append(args[-1]))
    endings = pg_endings(repo.engine, "api-process")
    assert endings is not None
    hub = EventHub(GroupCommitter(repo), TaskEventLog(repo.engine))
    scheduler = Scheduler(repo, Executor(repo, registry_with_test_types(), events=hub, committer=GroupCommitter(repo)),
                          poll_interval_s=0.05)
    try:
        request = TaskRequest("s", "s", "s")
        alone, _ = await repo.create_task("one", 1, request, node_ids=["s"])
        own, _ = await repo.create_task("one", 1, request, node_ids=["s"], watcher=scheduler.worker_id)
        own_only, _ = await repo.create_task("one", 1, request, node_ids=["s"], watcher=scheduler.worker_id)
        waited, _ = await repo.create_task("one", 1, request, node_ids=["s"])
        created_waited, _ = await repo.create_task("one", 1, request, node_ids=["s"], watcher="api-process")
        await endings.watch([waited.id, own.id])  # own: now two processes wait for it
        await endings.watch([created_waited.id])  # asked again by the same process: nothing changes
        tasks = (alone, own, own_only, waited, created_waited)
        await scheduler.start()

        async def all_ended() -> bool:
            return all([(await repo.get_task(task.id)).status.ended for task in tasks])

        await eventually(all_ended, timeout=10, interval=0.02)
        await eventually(lambda: len(heard) >= 3, timeout=5, interval=0.02)
        await asyncio.sleep(0.2)  # a notice for another end would have come by now
        assert sorted(heard, key=int) == [str(own.id), str(waited.id), str(created_waited.id)]
    finally:
        await scheduler.stop()
        await hub.close()
        await listener.close()
