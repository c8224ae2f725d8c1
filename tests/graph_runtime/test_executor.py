"""The executor and scheduler on a real repository: resume, concurrency limit, FIFO."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from graph_runtime.executor import Executor
from graph_runtime.flow import parse
from graph_runtime.models import NodeRun, NodeStatus, TaskRequest, TaskStatus
from graph_runtime.scheduler import Scheduler
from nodes.registry import default_registry
from storage import engine as storage_engine
from storage.repository import Repository
from tests.support import Echo, FlowBuilder, Sleep, eventually, registry_with_test_types

CHAIN = parse(FlowBuilder("chain").node("s", "start", data={"x": 1}).node("a", "test.echo").node("b", "test.echo")
              .node("e", "end").edge("s", "a").edge("a", "b").edge("b", "e").build())


@pytest.fixture
async def repo(db_url: str) -> AsyncIterator[Repository]:
    engine = storage_engine.create_engine(db_url)
    repository = Repository(engine)
    await repository.save_flow(CHAIN)
    yield repository
    await storage_engine.dispose(engine)


def request() -> TaskRequest:
    return TaskRequest("s", "e", "e")


async def test_resume_never_reruns_a_succeeded_node_and_counts_the_interrupted_try(repo: Repository) -> None:
    task, _ = await repo.create_task("chain", 1, request())
    claimed = await repo.claim_task(task.id, "a-worker-that-dies", lease_s=0.0)  # its lease lapses at once
    assert claimed is not None
    now = datetime.now(UTC)
    # What a process killed while `a` ran leaves behind: `s` done, `a` running on its first try.
    await repo.save_node_runs(task.id, [
        NodeRun("s", NodeStatus.SUCCEEDED, now, now, 0.001, 0.0, 1, None, {"x": 1}),
        NodeRun("a", NodeStatus.RUNNING, now, None, None, None, 1, None, None),
    ])
    scheduler = Scheduler(repo, Executor(repo, registry_with_test_types()), poll_interval_s=0.05)
    assert await scheduler.start() == 1
    try:
        done = await eventually(lambda: _ended(repo, task.id))
    finally:
        await scheduler.stop()
    assert done.status is TaskStatus.SUCCEEDED
    assert [node for node, _ in Echo.runs] == ["a", "b"], "s succeeded before the crash and must not run again"
    assert done.nodes["s"].attempts == 1 and done.nodes["a"].attempts == 2 and done.nodes["b"].attempts == 1
    assert done.result == {"b": {"a": {"s": {"x": 1}}}}


async def _ended(repo: Repository, task_id: int):  # type: ignore[no-untyped-def]
    task = await repo.get_task(task_id)
    return task if task.status.ended else None


async def test_scheduler_runs_at_most_max_concurrent_tasks_fifo(repo: Repository) -> None:
    sleepy = parse(FlowBuilder("sleepy").node("z", "test.sleep", seconds=0.05).build())
    await repo.save_flow(sleepy)
    ids = [(await repo.create_task("sleepy", 1, TaskRequest("z", "z", "z")))[0].id for _ in range(12)]
    scheduler = Scheduler(repo, Executor(repo, registry_with_test_types()), max_concurrent=3, poll_interval_s=0.05)
    await scheduler.start()
    try:
        tasks = await eventually(lambda: _all_ended(repo, ids), timeout=20)
    finally:
        await scheduler.stop()
    assert all(t.status is TaskStatus.SUCCEEDED for t in tasks)
    assert Sleep.peak == 3
    starts = [t.started for t in tasks]
    assert starts == sorted(starts), "tasks start in the order they were queued"


async def _all_ended(repo: Repository, ids: list[int]):  # type: ignore[no-untyped-def]
    tasks = [await repo.get_task(i) for i in ids]
    return tasks if all(t.status.ended for t in tasks) else None


async def test_scheduler_stop_releases_running_tasks_to_the_queue(repo: Repository) -> None:
    slow = parse(FlowBuilder("slow").node("z", "test.sleep", seconds=30).build())
    await repo.save_flow(slow)
    task, _ = await repo.create_task("slow", 1, TaskRequest("z", "z", "z"))
    scheduler = Scheduler(repo, Executor(repo, registry_with_test_types()), poll_interval_s=0.05)
    await scheduler.start()
    await eventually(lambda: Sleep.concurrent == 1)
    await scheduler.stop()
    left = await repo.get_task(task.id)
    assert left.status is TaskStatus.QUEUED, "released to the queue at once, not after its lease"
    assert left.nodes["z"].status is NodeStatus.RUNNING and left.nodes["z"].attempts == 1
    assert left.error is None and left.finished is None


async def test_a_cancel_recorded_by_another_process_stops_the_task(repo: Repository) -> None:
    slow = parse(FlowBuilder("slow").node("z", "test.sleep", seconds=30).build())
    await repo.save_flow(slow)
    task, _ = await repo.create_task("slow", 1, TaskRequest("z", "z", "z"))
    scheduler = Scheduler(repo, Executor(repo, registry_with_test_types()), poll_interval_s=0.05)
    await scheduler.start()
    try:
        await eventually(lambda: Sleep.concurrent == 1)
        assert (await repo.request_cancel(task.id)).status is TaskStatus.RUNNING  # only the flag, as the API elsewhere
        done = await eventually(lambda: _ended(repo, task.id))
    finally:
        await scheduler.stop()
    assert done.status is TaskStatus.CANCELLED and done.nodes["z"].status is NodeStatus.CANCELLED
    assert done.error.code == "cancelled"


async def test_an_output_too_deep_to_store_fails_its_node_not_the_bookkeeping(repo: Repository) -> None:
    deep: dict = {}
    for _ in range(60):
        deep = {"d": deep}
    builder = FlowBuilder("deep").node("s", "start", data=deep)
    previous = "s"
    for i in range(250):  # each echo wraps its input one level deeper
        builder.node(f"n{i}", "test.echo").edge(previous, f"n{i}")
        previous = f"n{i}"
    await repo.save_flow(parse(builder.build()))
    task, _ = await repo.create_task("deep", 1, TaskRequest("s", previous, previous))
    scheduler = Scheduler(repo, Executor(repo, registry_with_test_types()), poll_interval_s=0.05)
    await scheduler.start()
    try:
        done = await eventually(lambda: _ended(repo, task.id), timeout=30)
    finally:
        await scheduler.stop()
    assert done.status is TaskStatus.FAILED
    assert done.error.code == "node_failed" and "cannot be stored" in done.error.message
    failed = done.nodes[done.error.node_id]
    assert failed.status is NodeStatus.FAILED and failed.output is None


async def test_a_task_whose_node_type_was_uninstalled_ends_crashed(repo: Repository) -> None:
    task, _ = await repo.create_task("chain", 1, request())
    without_echo = default_registry(plugins=False)  # test.echo is gone, as after removing a plugin
    scheduler = Scheduler(repo, Executor(repo, without_echo), poll_interval_s=0.05)
    await scheduler.start()
    try:
        done = await eventually(lambda: _ended(repo, task.id))
    finally:
        await scheduler.stop()
    assert done.status is TaskStatus.FAILED and done.error.code == "crashed"
    assert "test.echo" in done.error.message


async def test_a_stop_while_the_end_is_being_written_still_records_the_end(repo: Repository) -> None:
    # The last node's success is written with the task's end. A stop (scheduler.stop cancels the
    # task after the drain grace) landing while that write waits for a lock held elsewhere must
    # not lose it: the store is closed right after.
    flow = parse(FlowBuilder("nap").node("s", "start", data={"x": 1}).node("z", "test.sleep", seconds=0.3)
                 .node("e", "end").edge("s", "z", input="v").edge("z", "e").build())
    await repo.save_flow(flow)
    task, _ = await repo.create_task("nap", 1, TaskRequest("s", "z", "z"))
    claimed = await repo.claim_task(task.id, "w")
    assert claimed is not None
    running = asyncio.ensure_future(Executor(repo, registry_with_test_types()).execute(claimed))
    await eventually(lambda: _node_running(repo, task.id, "z"))
    other = sqlite3.connect(repo.engine.url.database, isolation_level=None)  # another process writes a while
    other.execute("BEGIN IMMEDIATE")
    asyncio.get_running_loop().call_later(1.0, other.execute, "COMMIT")
    try:
        await asyncio.sleep(0.6)  # z has ended; the task's end waits for the lock
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
    finally:
        await eventually(lambda: not other.in_transaction, timeout=5)
        other.close()
    stored = await repo.get_task(task.id)
    assert stored.status is TaskStatus.SUCCEEDED and stored.nodes["z"].status is NodeStatus.SUCCEEDED


async def _node_running(repo: Repository, task_id: int, node_id: str) -> bool:
    run = (await repo.get_task(task_id)).nodes.get(node_id)
    return run is not None and run.status is NodeStatus.RUNNING
