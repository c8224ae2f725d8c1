"""Pools in the store (SPEC §10): batch claims, a task parked for a pool, and what never touches it
(recovery, renewals, releases), its cancel and the fence of a park. SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
import sqlalchemy as sa

from graph_runtime.errors import LeaseLost, TaskNotFound
from graph_runtime.flow import Flow
from graph_runtime.models import Lease, NodeRun, NodeStatus, Task, TaskStatus
from storage.repository import Repository, WorkerStore
from storage.repository_leases import REAPER_LOCK_KEY
from tests.storage.conftest import make_request

SavedFlow = Callable[..., Awaitable[Flow]]
GPU = frozenset({"gpu"})


async def queued(store: WorkerStore, count: int, parent_id: int | None = None) -> list[int]:
    return [(await store.create_task("demo", 1, make_request(n=n), parent_id=parent_id))[0].id for n in range(count)]


async def parked(store: WorkerStore, task_id: int, pool: str = "gpu") -> Task:
    """Claim ``task_id`` as worker w1, run its first node, and park it for ``pool`` at the second."""
    claimed = await store.claim_task(task_id, "w1", lease_s=60)
    assert claimed is not None and claimed.lease is not None and claimed.started is not None
    await store.save_node_runs(task_id, [NodeRun("start", NodeStatus.SUCCEEDED, claimed.started, claimed.started,
                                                cost=0.25)], lease=claimed.lease)
    await store.park_task(task_id, pool, [NodeRun("end", waiting_for_pool=pool)], lease=claimed.lease)
    return claimed


async def test_a_batch_claim_takes_up_to_its_limit_oldest_first(store: WorkerStore, saved_flow: SavedFlow) -> None:
    await saved_flow()
    ids = await queued(store, 5)
    first = await store.claim_tasks("w1", 60, 3)
    assert [t.id for t in first] == ids[:3]
    assert all(t.status is TaskStatus.RUNNING and t.lease == Lease("w1", 1) and t.started for t in first)
    assert [t.id for t in await store.claim_tasks("w2", 60, 3)] == ids[3:]
    assert await store.claim_tasks("w2", 60, 3) == []
    assert await store.claim_tasks("w2", 60, 0) == []


async def test_batch_claims_from_two_processes_never_share_a_task(
    make_repository: Callable[..., WorkerStore], saved_flow: SavedFlow
) -> None:
    await saved_flow()
    one, two = make_repository(WorkerStore), make_repository(WorkerStore)
    ids = await queued(one, 40)
    batches = await asyncio.gather(*(r.claim_tasks(f"w{n}", 60, 3) for _ in range(10) for n, r in enumerate((one, two))))
    got = [t.id for batch in batches for t in batch]
    assert sorted(got) == ids, "every task claimed exactly once"
    assert all([t.id for t in batch] == sorted(t.id for t in batch) for batch in batches)
    assert {(await one.get_task(task_id)).status for task_id in ids} == {TaskStatus.RUNNING}


async def test_a_parked_task_waits_for_a_claimer_serving_its_pool(store: WorkerStore, saved_flow: SavedFlow) -> None:
    await saved_flow()
    task_id, = await queued(store, 1)
    before = await parked(store, task_id)

    waiting = await store.get_task(task_id)
    assert (waiting.status, waiting.lease, waiting.claims) == (TaskStatus.RUNNING, None, 1)
    assert waiting.nodes["end"].waiting_for_pool == "gpu" and waiting.nodes["end"].status is NodeStatus.PENDING
    assert await store.claim_tasks("cpu-worker", 60, 10) == []
    assert await store.claim_tasks("cpu-worker", 60, 10, frozenset({"cpu", "tpu"})) == []

    [resumed] = await store.claim_tasks("gpu-worker", 60, 10, frozenset({"cpu", "gpu"}))
    assert (resumed.id, resumed.status, resumed.lease) == (task_id, TaskStatus.RUNNING, Lease("gpu-worker", 2))
    assert (resumed.claims, resumed.interruptions, resumed.started) == (2, 0, before.started)
    assert resumed.nodes["start"].status is NodeStatus.SUCCEEDED and resumed.nodes["end"].waiting_for_pool == "gpu"
    assert await store.claim_tasks("another-gpu-worker", 60, 10, GPU) == [], "claimed once"

    # The node starts: its row is rewritten, and no longer waits.
    await store.save_node_runs(task_id, [NodeRun("end", NodeStatus.RUNNING, resumed.started)], lease=resumed.lease)
    assert (await store.get_task(task_id)).nodes["end"].waiting_for_pool is None


async def test_parked_and_queued_tasks_are_claimed_together_oldest_first(store: WorkerStore, saved_flow: SavedFlow) -> None:
    await saved_flow()
    old, newer, newest = await queued(store, 3)
    await parked(store, newer)
    assert [t.id for t in await store.claim_tasks("w2", 60, 2, GPU)] == [old, newer]
    assert [t.id for t in await store.claim_tasks("w2", 60, 2, GPU)] == [newest]


async def test_recovery_renewals_and_releases_never_touch_a_parked_task(store: WorkerStore, saved_flow: SavedFlow) -> None:
    await saved_flow()
    task_id, expired = await queued(store, 2)
    await parked(store, task_id)
    await store.claim_task(expired, "w1", lease_s=0)

    assert await store.requeue_expired() == 1, "only the expired lease"
    assert await store.renew_leases("w1", [task_id], lease_s=60) == set()
    assert await store.release_tasks("w1", [task_id]) == 0
    assert await store.requeue_interrupted() == 0, "the expired one is queued already; the parked one stays"
    found = await store.get_task(task_id)
    assert (found.status, found.lease, found.interruptions) == (TaskStatus.RUNNING, None, 0)
    [resumed] = await store.claim_tasks("gpu-worker", 60, 1, GPU)
    assert resumed.id == task_id


async def test_a_parked_task_is_cancelled_at_once(store: WorkerStore, repo: Repository, saved_flow: SavedFlow) -> None:
    await saved_flow()
    task_id, = await queued(store, 1)
    await parked(store, task_id, "big-gpu")

    cancelled = await repo.request_cancel(task_id)  # the API's cancel
    assert cancelled == await store.get_task(task_id)
    assert cancelled.status is TaskStatus.CANCELLED and cancelled.finished is not None
    assert cancelled.error is not None and cancelled.error.as_dict() == {
        "node_id": None, "code": "cancelled", "message": "cancelled while waiting for a worker of pool big-gpu"}
    assert cancelled.execution_cost == 0.25 and cancelled.execution_time is not None
    end = cancelled.nodes["end"]
    assert (end.status, end.waiting_for_pool) == (NodeStatus.SKIPPED, None)
    assert cancelled.nodes["start"].status is NodeStatus.SUCCEEDED
    assert await store.claim_tasks("gpu-worker", 60, 10, frozenset({"big-gpu"})) == []
    assert await store.get_task(task_id) == cancelled


async def test_a_parked_child_ends_with_its_parents_cancel(store: WorkerStore, saved_flow: SavedFlow) -> None:
    await saved_flow()
    parent, = await queued(store, 1)
    await store.claim_task(parent, "w1", lease_s=60)
    child, = await queued(store, 1, parent)
    grandchild, = await queued(store, 1, child)
    await parked(store, child)

    assert sorted(await store.cancel_children(parent)) == [child, grandchild]
    ended = await store.get_task(child)
    assert ended.status is TaskStatus.CANCELLED and ended.error is not None and "pool gpu" in ended.error.message
    assert (await store.get_task(grandchild)).status is TaskStatus.CANCELLED
    assert (await store.get_task(parent)).status is TaskStatus.RUNNING


async def test_a_park_is_fenced_by_the_lease(store: WorkerStore, saved_flow: SavedFlow) -> None:
    await saved_flow()
    task_id, = await queued(store, 1)
    claimed = await store.claim_task(task_id, "w1", lease_s=60)
    assert claimed is not None and claimed.lease is not None

    for stale in (Lease("w1", 2), Lease("w2", 1)):
        with pytest.raises(LeaseLost):
            await store.park_task(task_id, "gpu", [NodeRun("end", waiting_for_pool="gpu")], lease=stale)
    with pytest.raises(TaskNotFound):
        await store.park_task(task_id + 1, "gpu", [], lease=claimed.lease)
    untouched = await store.get_task(task_id)
    assert untouched.lease == claimed.lease and "end" not in untouched.nodes
    assert await store.claim_tasks("gpu-worker", 60, 1, GPU) == []

    await store.park_task(task_id, "gpu", [NodeRun("end", waiting_for_pool="gpu")], lease=claimed.lease)
    with pytest.raises(LeaseLost):  # parked: the lease is gone
        await store.park_task(task_id, "gpu", [], lease=claimed.lease)
    assert (await store.save_node_runs_many([(task_id, NodeRun("end", NodeStatus.RUNNING))],
                                           {task_id: claimed.lease})).tasks == frozenset({task_id})
    assert (await store.get_task(task_id)).nodes["end"].waiting_for_pool == "gpu"


@pytest.mark.postgres
async def test_one_reaper_at_a_time_on_postgres(store: WorkerStore, saved_flow: SavedFlow) -> None:
    if store.engine.dialect.name != "postgresql":
        pytest.skip("SQLite's write lock serializes sweeps")
    await saved_flow()
    task_id, = await queued(store, 1)
    await store.claim_task(task_id, "dead", lease_s=0)
    async with store.engine.begin() as other:  # another process sweeping right now
        assert (await other.execute(sa.text(f"SELECT pg_try_advisory_xact_lock({REAPER_LOCK_KEY})"))).scalar()
        assert await store.requeue_expired() == 0
    assert await store.requeue_expired() == 1
