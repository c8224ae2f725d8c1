"""Leases that hold while the loop is blocked, fenced writes after a lease is lost, the crash-loop
guard and the output ceiling: the executor and scheduler on a real SQLite file."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from graph_runtime.executor import Executor
from graph_runtime.flow import parse
from graph_runtime.models import Lease, NodeRun, NodeStatus, Task, TaskRequest, TaskStatus
from graph_runtime.scheduler import Scheduler
from nodes.limits import Limits
from storage import engine as storage_engine
from storage.repository import Repository
from storage.repository_leases import lease_renewer
from tests.support import Echo, FlowBuilder, eventually, registry_with_test_types


def _flow(flow_id: str, node_type: str, **settings: object):  # type: ignore[no-untyped-def]
    return parse(FlowBuilder(flow_id).node("s", "start", data={"x": 1}).node("a", node_type, **settings)
                 .node("e", "end").edge("s", "a", input="v").edge("a", "e").build())


@pytest.fixture
async def repo(db_url: str) -> AsyncIterator[Repository]:
    engine = storage_engine.create_engine(db_url)
    repository = Repository(engine)
    for flow in (_flow("blocker", "test.loop_blocker", seconds=2.0), _flow("nap", "test.sleep", seconds=0.5),
                 _flow("echo", "test.echo"), _flow("big", "test.big", chars=20_000)):
        await repository.save_flow(flow)
    yield repository
    await storage_engine.dispose(engine)


async def _ended(repo: Repository, task_id: int) -> Task | None:
    task = await repo.get_task(task_id)
    return task if task.status.ended else None


def _other_worker_sweeping(url: str, stop: threading.Event, requeued: list[int]) -> threading.Thread:
    """Another process's recovery sweep, every 50 ms, on its own connection and loop."""
    async def sweep() -> None:
        engine = storage_engine.create_engine(url)
        other = Repository(engine)
        try:
            while not stop.is_set():
                requeued.append(await other.requeue_expired(exclude_worker="another-worker"))
                await asyncio.sleep(0.05)
        finally:
            await storage_engine.dispose(engine)

    thread = threading.Thread(target=lambda: asyncio.run(sweep()))
    thread.start()
    return thread


async def test_a_node_blocking_the_event_loop_does_not_lose_its_lease(repo: Repository, db_url: str) -> None:
    """The heartbeat runs in its own thread: a 2 s synchronous node against a 0.6 s lease is
    neither taken over by another worker's sweep nor run twice."""
    task, _ = await repo.create_task("blocker", 1, TaskRequest("s", "e", "e"))
    scheduler = Scheduler(repo, Executor(repo, registry_with_test_types()), poll_interval_s=0.05, lease_s=0.6,
                          open_renewer=lease_renewer(repo.engine))
    stop, requeued = threading.Event(), []
    sweeper = _other_worker_sweeping(db_url, stop, requeued)
    await scheduler.start()
    try:
        done = await eventually(lambda: _ended(repo, task.id))
    finally:
        stop.set()
        await asyncio.to_thread(sweeper.join)
        await scheduler.stop()
    assert len(requeued) > 10, "the other worker's sweep kept looking while the loop was blocked"
    assert sum(requeued) == 0, "the lease never lapsed"
    assert done.status is TaskStatus.SUCCEEDED
    assert done.nodes["a"].attempts == 1 and done.claims == 1 and done.interruptions == 0


async def test_a_worker_that_lost_its_lease_stops_and_records_nothing(repo: Repository) -> None:
    """A worker frozen past its lease whose task another worker resumed: its node's end and its
    task's end are refused, and the node's second try is counted by the worker that holds it."""
    task, _ = await repo.create_task("nap", 1, TaskRequest("s", "e", "e"), node_ids=["s", "a", "e"])
    stale = await repo.claim_task(task.id, "frozen", lease_s=0.0)
    assert stale is not None
    frozen = asyncio.ensure_future(Executor(repo, registry_with_test_types()).execute(stale))
    await eventually(lambda: _node_is(repo, task.id, "a", NodeStatus.RUNNING))
    assert await repo.requeue_expired() == 1
    fresh = await repo.claim_next_task("alive", 60)
    assert fresh is not None and fresh.lease == Lease("alive", 2)

    returned = await frozen  # its sleep ended; every write it tried was refused
    assert returned.status is TaskStatus.RUNNING
    stored = await repo.get_task(task.id)
    assert stored.status is TaskStatus.RUNNING and stored.nodes["a"].status is NodeStatus.RUNNING
    assert stored.nodes["e"].status is NodeStatus.PENDING

    done = await Executor(repo, registry_with_test_types()).execute(fresh)
    assert done.status is TaskStatus.SUCCEEDED
    ended = await repo.get_task(task.id)
    assert ended.nodes["a"].attempts == 2, "two tries ran, two are counted"
    assert all(run.status is NodeStatus.SUCCEEDED for run in ended.nodes.values())


async def _node_is(repo: Repository, task_id: int, node_id: str, status: NodeStatus) -> bool:
    run = (await repo.get_task(task_id)).nodes.get(node_id)
    return run is not None and run.status is status


async def _die_while_running(repo: Repository, task_id: int, attempts: int) -> None:
    """What a process killed while node `a` runs leaves behind, then another worker's sweep."""
    claimed = await repo.claim_task(task_id, f"doomed-{attempts}", lease_s=0.0)
    assert claimed is not None
    now = datetime.now(UTC)
    await repo.save_node_runs(task_id, [NodeRun("s", NodeStatus.SUCCEEDED, now, now, 0.0, 0.0, 1, None, {"x": 1}),
                                        NodeRun("a", NodeStatus.RUNNING, now, attempts=attempts)], lease=claimed.lease)
    assert await repo.requeue_expired() == 1


async def test_a_task_whose_process_died_twice_in_a_node_ends_crashed_naming_it(repo: Repository) -> None:
    task, _ = await repo.create_task("echo", 1, TaskRequest("s", "e", "e"), node_ids=["s", "a", "e"])
    await _die_while_running(repo, task.id, attempts=1)
    await _die_while_running(repo, task.id, attempts=2)
    Echo.runs.clear()
    scheduler = Scheduler(repo, Executor(repo, registry_with_test_types()), poll_interval_s=0.05)
    await scheduler.start()
    try:
        done = await eventually(lambda: _ended(repo, task.id))
    finally:
        await scheduler.stop()
    assert done.status is TaskStatus.FAILED and done.interruptions == 2
    assert done.error is not None and done.error.code == "crashed" and done.error.node_id == "a"
    assert "died 2 times" in done.error.message
    assert done.nodes["a"].status is NodeStatus.FAILED and done.nodes["a"].attempts == 2
    assert done.nodes["e"].status is NodeStatus.SKIPPED and done.nodes["s"].status is NodeStatus.SUCCEEDED
    assert Echo.runs == [], "the crashing node is not run a third time"


async def test_a_worker_killed_before_it_restarts_a_node_does_not_get_that_node_blamed(repo: Repository) -> None:
    """Two interruptions, but the node stored running was started once: the second worker died
    (killed from outside) before it began it again. It resumes; it is not a crashing node."""
    task, _ = await repo.create_task("echo", 1, TaskRequest("s", "e", "e"), node_ids=["s", "a", "e"])
    await _die_while_running(repo, task.id, attempts=1)
    await _die_while_running(repo, task.id, attempts=1)
    scheduler = Scheduler(repo, Executor(repo, registry_with_test_types()), poll_interval_s=0.05)
    await scheduler.start()
    try:
        done = await eventually(lambda: _ended(repo, task.id))
    finally:
        await scheduler.stop()
    assert done.status is TaskStatus.SUCCEEDED and done.interruptions == 2 and done.nodes["a"].attempts == 2


async def test_a_task_interrupted_once_resumes(repo: Repository) -> None:
    task, _ = await repo.create_task("echo", 1, TaskRequest("s", "e", "e"), node_ids=["s", "a", "e"])
    await _die_while_running(repo, task.id, attempts=1)
    scheduler = Scheduler(repo, Executor(repo, registry_with_test_types()), poll_interval_s=0.05)
    await scheduler.start()
    try:
        done = await eventually(lambda: _ended(repo, task.id))
    finally:
        await scheduler.stop()
    assert done.status is TaskStatus.SUCCEEDED and done.nodes["a"].attempts == 2 and done.interruptions == 1


@pytest.mark.parametrize(("limit", "fails"), [(10_000, True), (1_000_000, False)])
async def test_an_output_over_max_output_bytes_fails_the_node(repo: Repository, limit: int, fails: bool) -> None:
    task, _ = await repo.create_task("big", 1, TaskRequest("s", "e", "e"))
    executor = Executor(repo, registry_with_test_types(), limits=Limits(max_output_bytes=limit))
    scheduler = Scheduler(repo, executor, poll_interval_s=0.05)
    await scheduler.start()
    try:
        done = await eventually(lambda: _ended(repo, task.id))
    finally:
        await scheduler.stop()
    if fails:
        assert done.status is TaskStatus.FAILED
        assert done.error is not None and done.error.code == "output_too_large" and done.error.node_id == "a"
        assert "MAX_OUTPUT_BYTES" in done.error.message and done.nodes["a"].output is None
        assert done.nodes["a"].attempts == 1, "a deterministic failure is not retried"
    else:
        assert done.status is TaskStatus.SUCCEEDED and len(done.result["a"]["text"]) == 20_000  # type: ignore[index]
