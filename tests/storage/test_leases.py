"""Leases: a worker's heartbeat keeps its tasks; a dead worker's tasks go back to the queue."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import pytest

from graph_runtime.errors import LeaseLost
from graph_runtime.flow import Flow
from graph_runtime.models import Lease, NodeRun, NodeStatus, TaskOutcome, TaskStatus
from storage.repository import WorkerStore
from tests.storage.conftest import make_request

SavedFlow = Callable[..., Awaitable[Flow]]
T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


async def queued(store: WorkerStore, count: int) -> list[int]:
    return [(await store.create_task("demo", 1, make_request(n=n)))[0].id for n in range(count)]


async def test_a_live_lease_is_not_recovered_and_an_expired_one_is(store: WorkerStore, saved_flow: SavedFlow) -> None:
    await saved_flow()
    alive, dead = await queued(store, 2)
    await store.claim_task(alive, "alive", lease_s=60)
    await store.claim_task(dead, "dead", lease_s=0)
    assert await store.requeue_expired() == 1
    assert (await store.get_task(alive)).status is TaskStatus.RUNNING
    back = await store.get_task(dead)
    assert back.status is TaskStatus.QUEUED and back.started is None
    resumed = await store.claim_next_task("another", 60)
    assert resumed is not None and resumed.id == dead and resumed.claims == 2


async def test_renewing_keeps_only_what_the_worker_still_holds(store: WorkerStore, saved_flow: SavedFlow) -> None:
    await saved_flow()
    mine, lost = await queued(store, 2)
    await store.claim_task(mine, "w1", lease_s=0)
    await store.claim_task(lost, "w1", lease_s=0)
    assert await store.renew_leases("w1", [mine], lease_s=60) == {mine}
    assert await store.requeue_expired() == 1  # `lost` was not renewed in time
    await store.claim_task(lost, "w2", lease_s=60)
    assert await store.renew_leases("w1", [mine, lost], lease_s=60) == {mine}, "w2 holds it now"
    assert await store.renew_leases("w1", [], lease_s=60) == set()


async def test_release_requeues_only_the_workers_own_running_tasks(store: WorkerStore, saved_flow: SavedFlow) -> None:
    await saved_flow()
    mine, theirs = await queued(store, 2)
    await store.claim_task(mine, "w1", lease_s=60)
    await store.claim_task(theirs, "w2", lease_s=60)
    assert await store.release_tasks("w1", [mine, theirs]) == 1
    assert (await store.get_task(mine)).status is TaskStatus.QUEUED
    assert (await store.get_task(theirs)).status is TaskStatus.RUNNING


async def test_a_worker_whose_lease_was_taken_records_nothing(store: WorkerStore, saved_flow: SavedFlow) -> None:
    """The fence: a worker that froze past its lease (SIGSTOP, a GC pause) and whose task another
    worker resumed cannot write a node run or the task's end any more."""
    await saved_flow()
    (task_id,) = await queued(store, 1)
    stale = await store.claim_task(task_id, "frozen", lease_s=0)
    assert stale is not None and stale.lease == Lease("frozen", 1)
    await store.save_node_runs(task_id, [NodeRun("start", NodeStatus.RUNNING, T0, attempts=1)], lease=stale.lease)
    assert await store.requeue_expired() == 1
    fresh = await store.claim_next_task("alive", 60)
    assert fresh is not None and fresh.lease == Lease("alive", 2) and fresh.interruptions == 1
    assert fresh.nodes["start"].attempts == 1, "the frozen worker's try is counted"
    await store.save_node_runs(task_id, [NodeRun("start", NodeStatus.RUNNING, T0, attempts=2)], lease=fresh.lease)

    done = NodeRun("start", NodeStatus.SUCCEEDED, T0, T0, attempts=1, output={"from": "frozen"})
    with pytest.raises(LeaseLost):
        await store.save_node_runs(task_id, [done], lease=stale.lease)
    refused = await store.save_node_runs_many([(task_id, done)], {task_id: stale.lease})
    assert refused.tasks == {task_id}
    with pytest.raises(LeaseLost):
        await store.finish_task(task_id, TaskOutcome(TaskStatus.SUCCEEDED, T0, 0.0, 0.0, result={}), [done],
                               lease=stale.lease)
    current = await store.get_task(task_id)
    assert current.status is TaskStatus.RUNNING
    assert current.nodes["start"].status is NodeStatus.RUNNING and current.nodes["start"].attempts == 2

    await store.finish_task(task_id, TaskOutcome(TaskStatus.SUCCEEDED, T0, 0.0, 0.0, result={}),
                           [NodeRun("start", NodeStatus.SUCCEEDED, T0, T0, attempts=2, output={})], lease=fresh.lease)
    ended = await store.get_task(task_id)
    assert ended.status is TaskStatus.SUCCEEDED and ended.nodes["start"].attempts == 2


async def test_a_grouped_write_refuses_only_the_tasks_whose_lease_was_lost(store: WorkerStore,
                                                                          saved_flow: SavedFlow) -> None:
    await saved_flow()
    kept_id, lost_id = await queued(store, 2)
    kept = await store.claim_task(kept_id, "w1", lease_s=60)
    lost = await store.claim_task(lost_id, "w1", lease_s=0)
    assert kept is not None and lost is not None
    await store.requeue_expired(exclude_worker="w1", running=[kept_id])
    rows = [(kept_id, NodeRun("start", NodeStatus.RUNNING, T0, attempts=1)),
            (lost_id, NodeRun("start", NodeStatus.RUNNING, T0, attempts=1))]
    assert (await store.save_node_runs_many(rows, {kept_id: kept.lease, lost_id: lost.lease})).tasks == {lost_id}
    assert (await store.get_task(kept_id)).nodes["start"].status is NodeStatus.RUNNING
    assert "start" not in (await store.get_task(lost_id)).nodes, "nothing was written for it"


async def test_a_worker_requeues_its_own_expired_tasks_it_no_longer_runs(store: WorkerStore,
                                                                          saved_flow: SavedFlow) -> None:
    """A task whose end its worker could not record does not stay running until a restart."""
    await saved_flow()
    running_id, stranded_id = await queued(store, 2)
    await store.claim_task(running_id, "w1", lease_s=0)
    await store.claim_task(stranded_id, "w1", lease_s=0)
    assert await store.requeue_expired(exclude_worker="w1", running=[running_id]) == 1
    assert (await store.get_task(running_id)).status is TaskStatus.RUNNING
    stranded = await store.get_task(stranded_id)
    assert stranded.status is TaskStatus.QUEUED and stranded.interruptions == 1
