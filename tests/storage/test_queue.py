"""The queue as the executor sees it: FIFO claims, no double claims, resume after a crash."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from graph_runtime.flow import Flow
from graph_runtime.models import NodeRun, NodeStatus, TaskOutcome, TaskStatus
from graph_runtime.ports import TaskStore
from storage.repository import Repository, WorkerStore
from tests.storage.conftest import make_request

SavedFlow = Callable[..., Awaitable[Flow]]
T0 = datetime(2026, 11, 23, 21, 14, 34, 800001, tzinfo=UTC)


async def queue(store: WorkerStore, count: int) -> list[int]:
    return [(await store.create_task("demo", 1, make_request(n=n)))[0].id for n in range(count)]


def test_the_worker_store_is_a_task_store() -> None:
    store: type[TaskStore] = WorkerStore  # checked by type checkers; and at runtime:
    whole: type[TaskStore] = Repository
    assert issubclass(whole, store)
    for name in (
        "claim_tasks",
        "park_task",
        "claim_next_task",
        "load_flow",
        "save_node_runs",
        "finish_task",
        "is_cancel_requested",
        "renew_leases",
        "release_tasks",
        "requeue_expired",
    ):
        assert callable(getattr(store, name))


async def test_claims_are_first_in_first_out(store: WorkerStore, saved_flow: SavedFlow) -> None:
    await saved_flow()
    ids = await queue(store, 3)
    claimed = [await store.claim_next_task() for _ in range(4)]
    assert [t.id if t else None for t in claimed] == [*ids, None]
    assert claimed[1] is not None and claimed[1].request == make_request(n=1)


async def test_an_empty_queue_claims_nothing(store: WorkerStore) -> None:
    assert await store.claim_next_task() is None


async def test_concurrent_claims_never_share_a_task(store: WorkerStore, saved_flow: SavedFlow) -> None:
    await saved_flow()
    ids = await queue(store, 30)
    claimed = await asyncio.gather(*(store.claim_next_task() for _ in range(40)))
    got = [t.id for t in claimed if t is not None]
    assert sorted(got) == ids and len(set(got)) == 30
    assert {(await store.get_task(task_id)).status for task_id in ids} == {TaskStatus.RUNNING}


async def test_claims_from_two_processes_never_share_a_task(
    make_repository: Callable[..., WorkerStore], saved_flow: SavedFlow
) -> None:
    await saved_flow()
    one, two = make_repository(WorkerStore), make_repository(WorkerStore)
    ids = await queue(one, 24)
    claimed = await asyncio.gather(*(r.claim_next_task() for _ in range(15) for r in (one, two)))
    got = [t.id for t in claimed if t is not None]
    assert sorted(got) == ids


async def test_claim_task_takes_exactly_that_queued_task(store: WorkerStore, saved_flow: SavedFlow) -> None:
    await saved_flow()
    first, second = await queue(store, 2)
    claimed = await store.claim_task(second)
    assert claimed is not None and claimed.id == second and claimed.status is TaskStatus.RUNNING
    assert await store.claim_task(second) is None
    assert (await store.claim_next_task()).id == first  # type: ignore[union-attr]


async def test_interrupted_tasks_go_back_to_the_queue_and_resume(store: WorkerStore, repo: Repository,
                                                                 saved_flow: SavedFlow) -> None:
    await saved_flow()
    first, second, third = await queue(store, 3)
    await store.claim_next_task()
    await store.claim_next_task()
    done = NodeRun("start", NodeStatus.SUCCEEDED, T0, T0, execution_time=0.0, cost=0.0, attempts=1, output={"n": 0})
    await store.save_node_runs(first, [done, NodeRun("end", NodeStatus.RUNNING, T0, attempts=1)])
    await repo.request_cancel(second)  # the API's cancel

    assert await store.requeue_interrupted() == 2  # the process died
    assert await repo.count_tasks(TaskStatus.RUNNING) == 0
    requeued = await store.get_task(first)
    assert requeued.status is TaskStatus.QUEUED and requeued.started is None

    resumed = await store.claim_next_task()
    assert resumed is not None and resumed.id == first and resumed.started is not None
    assert resumed.nodes["start"] == done and resumed.nodes["end"].attempts == 1
    assert (await store.claim_next_task()).id == second  # type: ignore[union-attr]
    assert await store.is_cancel_requested(second)  # the cancel survives the restart
    assert (await store.claim_next_task()).id == third  # type: ignore[union-attr]
    assert await store.requeue_interrupted() == 3


async def test_ended_tasks_are_not_requeued(store: WorkerStore, saved_flow: SavedFlow) -> None:
    await saved_flow()
    (task_id,) = await queue(store, 1)
    await store.claim_next_task()
    await store.finish_task(task_id, TaskOutcome(TaskStatus.SUCCEEDED, T0, 0.0, 0.0, result={}), [])
    assert await store.requeue_interrupted() == 0
    assert (await store.get_task(task_id)).status is TaskStatus.SUCCEEDED
