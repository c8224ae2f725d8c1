"""A task whose caller waits for it (``?wait``) is created running in a free slot of the process
that receives it: no queue time, no claim after it. Never ahead of tasks already queued, and
never beyond ``max_concurrent``. A task the process runs itself whatever its slots hold (a
subflow's child, ``graph-runtime run``'s task) is created running beside them. One scheduler on a
real SQLite file."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from graph_runtime.children import TaskChildren
from graph_runtime.executor import Executor
from graph_runtime.flow import parse
from graph_runtime.models import Task, TaskRequest, TaskStatus
from graph_runtime.scheduler import Scheduler
from nodes.fanout import ChildRequest
from nodes.limits import Limits
from storage import engine as storage_engine
from storage.repository import Repository
from tests.support import FlowBuilder, eventually, registry_with_test_types

SLEEPY = TaskRequest("s", "e", "e", node_settings={"z": {"seconds": 0.3}})


@pytest.fixture
async def repo(db_url: str) -> AsyncIterator[Repository]:
    engine = storage_engine.create_engine(db_url)
    repository = Repository(engine)
    await repository.save_flow(parse(FlowBuilder("nap").node("s", "start", data={"x": 1}).node("z", "test.sleep")
                                     .node("e", "end").edge("s", "z", input="x").edge("z", "e").build()))
    yield repository
    await storage_engine.dispose(engine)


@pytest.fixture
async def scheduler(repo: Repository) -> AsyncIterator[Scheduler]:
    worker = Scheduler(repo, Executor(repo, registry_with_test_types()), max_concurrent=1, poll_interval_s=0.05,
                       lease_s=5.0, worker_id="this-process")
    await worker.start()
    yield worker
    await worker.stop()


async def _back_in_the_queue(repo: Repository, scheduler: Scheduler, task_id: int) -> None:
    async def queued() -> Task | None:
        found = await repo.get_task(task_id)
        return found if found.status is TaskStatus.QUEUED else None

    back = await eventually(queued, timeout=5)
    assert back.lease is None and scheduler.running_count == 0, "released, not run by a stopped worker"


async def _ended(repo: Repository, task_id: int) -> Task | None:
    task = await repo.get_task(task_id)
    return task if task.status.ended else None


async def test_a_waited_task_is_created_running_in_a_free_slot(repo: Repository, scheduler: Scheduler) -> None:
    claim = await eventually(scheduler.reserve_slot, timeout=5)  # once its first claim found the queue empty
    assert scheduler.reserve_slot() is None, "one slot: kept for the task being created"
    task, created = await repo.create_task("nap", 1, SLEEPY, node_ids=["s", "z", "e"], claim=claim)
    assert created and task.status is TaskStatus.RUNNING and task.claims == 1
    stored = await repo.get_task(task.id)
    assert stored.status is TaskStatus.RUNNING and stored.started == stored.created, "no time in the queue"
    scheduler.run_reserved(task)
    done = await eventually(lambda: _ended(repo, task.id), timeout=10)
    assert done.status is TaskStatus.SUCCEEDED and done.claims == 1 and done.nodes["z"].attempts == 1


async def test_no_slot_is_kept_while_the_slots_are_taken_or_tasks_wait_in_the_queue(
        repo: Repository, scheduler: Scheduler) -> None:
    first, _ = await repo.create_task("nap", 1, SLEEPY, node_ids=["s", "z", "e"])
    queued, _ = await repo.create_task("nap", 1, SLEEPY, node_ids=["s", "z", "e"])
    scheduler.notify()
    await eventually(lambda: scheduler.running_count == 1, timeout=5)
    refused = []
    while (await repo.get_task(queued.id)).status is TaskStatus.QUEUED:
        refused.append(scheduler.reserve_slot())  # the slot is taken, then the queued task goes first
        await asyncio.sleep(0.01)
    assert refused and not any(refused)
    for task in (first, queued):
        assert (await eventually(lambda task=task: _ended(repo, task.id), timeout=10)).status is TaskStatus.SUCCEEDED
    assert await eventually(scheduler.reserve_slot, timeout=5) is not None, "the queue is empty again"
    scheduler.run_reserved(None)  # the task was not created after all: the slot is free again
    assert await eventually(scheduler.reserve_slot, timeout=5) is not None


async def test_of_a_burst_queued_here_no_more_go_without_waking_other_workers_than_slots_are_free(
        repo: Repository, scheduler: Scheduler) -> None:
    await eventually(lambda: scheduler.takes_new_work_now, timeout=5)  # idle, the queue empty: it takes the next
    assert scheduler.promise_claim(), "one slot free: the first task of the burst is claimed here"
    assert not scheduler.promise_claim(), "the second, queued before the first one's insert ended, wakes the others"
    assert scheduler.reserve_slot() is None, "nor may a waited task jump ahead of the first"
    first, _ = await repo.create_task("nap", 1, SLEEPY, node_ids=["s", "z", "e"], wake=False)
    scheduler.notify()
    assert not scheduler.promise_claim(), "queued and not claimed yet: the next wakes the others"
    assert (await eventually(lambda: _ended(repo, first.id), timeout=10)).status is TaskStatus.SUCCEEDED
    assert await eventually(scheduler.promise_claim, timeout=5)


async def test_a_task_created_in_a_slot_while_the_worker_stops_goes_back_to_the_queue(
        repo: Repository, scheduler: Scheduler) -> None:
    claim = await eventually(scheduler.reserve_slot, timeout=5)
    await scheduler.stop()  # the process stops while the task is being inserted
    task, _ = await repo.create_task("nap", 1, SLEEPY, node_ids=["s", "z", "e"], claim=claim)
    scheduler.run_reserved(task)
    await _back_in_the_queue(repo, scheduler, task.id)


def caller_flow() -> dict[str, object]:
    """caller: a subflow node running ``nap`` as its child task."""
    return {"id": "caller", "defaults": {"start_node_id": "call"},
            "nodes": [{"id": "call", "type": "subflow", "settings": {"flow_id": "nap"}}, {"id": "e", "type": "end"}],
            "edges": [{"from": "call", "to": "e", "input": "child"}]}


async def test_a_task_run_here_is_created_running_beside_the_taken_slots(repo: Repository, scheduler: Scheduler) -> None:
    long_nap = TaskRequest("s", "e", "e", node_settings={"z": {"seconds": 3}})
    busy, _ = await repo.create_task("nap", 1, long_nap, node_ids=["s", "z", "e"])
    scheduler.notify()
    await eventually(lambda: scheduler.running_count == 1, timeout=5)  # the only slot is taken
    claim = scheduler.claim_here()
    assert claim is not None and claim.worker == "this-process"
    task, created = await repo.create_task("nap", 1, SLEEPY, node_ids=["s", "z", "e"], claim=claim)
    assert created and (await repo.get_task(task.id)).status is TaskStatus.RUNNING
    scheduler.adopt(task)
    done = await asyncio.wait_for(scheduler.run_child(task.id), 10)
    assert done.status is TaskStatus.SUCCEEDED and done.claims == 1
    stored = await repo.get_task(task.id)
    assert stored.started == stored.created, "never in the queue, where another worker could take it"
    assert (await repo.get_task(busy.id)).status is TaskStatus.RUNNING, "it ran beside the slot's task"


async def test_a_subflows_child_is_created_running_in_its_parents_process(
        repo: Repository, scheduler: Scheduler) -> None:
    await repo.save_flow(parse(caller_flow()))
    parent, _ = await repo.create_task("caller", 1, TaskRequest("call", "e", "e"), node_ids=["call", "e"])
    scheduler.notify()
    done = await eventually(lambda: _ended(repo, parent.id), timeout=10)
    assert done.status is TaskStatus.SUCCEEDED, done.error
    [child] = await repo.list_tasks(parent_id=parent.id)
    assert child.status is TaskStatus.SUCCEEDED and child.claims == 1
    assert child.started == child.created, "created running here: no queue, no claim after it"


async def test_a_task_created_to_run_here_while_the_worker_stops_goes_back_to_the_queue(
        repo: Repository, scheduler: Scheduler) -> None:
    claim = scheduler.claim_here()
    assert claim is not None
    task, _ = await repo.create_task("nap", 1, SLEEPY, node_ids=["s", "z", "e"], claim=claim)
    await scheduler.stop()  # the process stops between the insert and running it
    assert scheduler.claim_here() is None, "a stopped worker creates nothing running"
    never_started = Scheduler(repo, Executor(repo, registry_with_test_types()), worker_id="idle")
    assert never_started.claim_here() is None, "nor one not started: no heartbeat would renew the lease"
    scheduler.adopt(task)
    await _back_in_the_queue(repo, scheduler, task.id)


class _HeldAfterInsert:
    """The real repository, whose ``create_task`` commits and then waits for ``release`` before it
    returns: a caller cancelled in that moment lost the answer, not the row."""

    def __init__(self, repo: Repository) -> None:
        self._repo = repo
        self.inserted = asyncio.Event()
        self.release = asyncio.Event()

    def __getattr__(self, name: str) -> object:
        return getattr(self._repo, name)

    async def create_task(self, *args: object, **kwargs: object) -> tuple[Task, bool]:
        made = await self._repo.create_task(*args, **kwargs)  # type: ignore[arg-type]
        self.inserted.set()
        await self.release.wait()
        return made


async def test_a_child_inserted_while_its_node_is_cancelled_still_runs_here(
        repo: Repository, scheduler: Scheduler) -> None:
    await repo.save_flow(parse(caller_flow()))
    parent, _ = await repo.create_task("caller", 1, TaskRequest("call", "e", "e"), node_ids=["call", "e"])
    held = _HeldAfterInsert(repo)
    children = TaskChildren(held, registry_with_test_types(), Limits(), scheduler, parent, "call")  # type: ignore[arg-type]
    node = asyncio.ensure_future(children.run("", ChildRequest("nap")))
    await asyncio.wait_for(held.inserted.wait(), 5)
    node.cancel()  # the node is cancelled (a timeout, its task's cancel) just after the insert committed
    with pytest.raises(asyncio.CancelledError):
        await node
    held.release.set()
    [child] = await repo.list_tasks(parent_id=parent.id)
    ended = await eventually(lambda: _ended(repo, child.id), timeout=3)  # under the 5 s lease: not requeued first
    assert ended.status is TaskStatus.SUCCEEDED and ended.claims == 1, "run here, once, not left to the lease's expiry"
