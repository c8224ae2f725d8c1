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
from storage.repository import Repository
from storage.repository_leases import REAPER_LOCK_KEY
from tests.storage.conftest import make_request

SavedFlow = Callable[..., Awaitable[Flow]]
GPU = frozenset({"gpu"})


async def queued(repo: Repository, count: int, parent_id: int | None = None) -> list[int]:
    return [(await repo.create_task("demo", 1, make_request(n=n), parent_id=parent_id))[0].id for n in range(count)]


async def parked(repo: Repository, task_id: int, pool: str = "gpu") -> Task:
    """Claim ``task_id`` as worker w1, run its first node, and park it for ``pool`` at the second."""
    claimed = await repo.claim_task(task_id, "w1", lease_s=60)
    assert claimed is not None and claimed.lease is not None and claimed.started is not None
    await repo.save_node_runs(task_id, [NodeRun("start", NodeStatus.SUCCEEDED, claimed.started, claimed.started,
                                                cost=0.25)], lease=claimed.lease)
    await repo.park_task(task_id, pool, [NodeRun("end", waiting_for_pool=pool)], lease=claimed.lease)
    return claimed


async def test_a_batch_claim_takes_up_to_its_limit_oldest_first(repo: Repository, saved_flow: SavedFlow) -> None:
    await saved_flow()
    ids = await queued(repo, 5)
    first = await repo.claim_tasks("w1", 60, 3)
    assert [t.id for t in first] == ids[:3]
    assert all(t.status is TaskStatus.RUNNING and t.lease == Lease("w1", 1) and t.started for t in first)
    assert [t.id for t in await repo.claim_tasks("w2", 60, 3)] == ids[3:]
    assert await repo.claim_tasks("w2", 60, 3) == []
    assert await repo.claim_tasks("w2", 60, 0) == []


async def test_batch_claims_from_two_processes_never_share_a_task(
    make_repository: Callable[[], Repository], saved_flow: SavedFlow
) -> None:
    await saved_flow()
    one, two = make_repository(), make_repository()
    ids = await queued(one, 40)
    batches = await asyncio.gather(*(r.claim_tasks(f"w{n}", 60, 3) for _ in range(10) for n, r in enumerate((one, two))))
    got = [t.id for batch in batches for t in batch]
    assert sorted(got) == ids, "every task claimed exactly once"
    assert all([t.id for t in batch] == sorted(t.id for t in batch) for batch in batches)
    assert await one.count_tasks(TaskStatus.RUNNING) == 40


async def test_a_parked_task_waits_for_a_claimer_serving_its_pool(repo: Repository, saved_flow: SavedFlow) -> None:
    await saved_flow()
    task_id, = await queued(repo, 1)
    before = await parked(repo, task_id)

    waiting = await repo.get_task(task_id)
    assert (waiting.status, waiting.lease, waiting.claims) == (TaskStatus.RUNNING, None, 1)
    assert waiting.nodes["end"].waiting_for_pool == "gpu" and waiting.nodes["end"].status is NodeStatus.PENDING
    assert await repo.claim_tasks("cpu-worker", 60, 10) == []
    assert await repo.claim_tasks("cpu-worker", 60, 10, frozenset({"cpu", "tpu"})) == []

    [resumed] = await repo.claim_tasks("gpu-worker", 60, 10, frozenset({"cpu", "gpu"}))
    assert (resumed.id, resumed.status, resumed.lease) == (task_id, TaskStatus.RUNNING, Lease("gpu-worker", 2))
    assert (resumed.claims, resumed.interruptions, resumed.started) == (2, 0, before.started)
    assert resumed.nodes["start"].status is NodeStatus.SUCCEEDED and resumed.nodes["end"].waiting_for_pool == "gpu"
    assert await repo.claim_tasks("another-gpu-worker", 60, 10, GPU) == [], "claimed once"

    # The node starts: its row is rewritten, and no longer waits.
    await repo.save_node_runs(task_id, [NodeRun("end", NodeStatus.RUNNING, resumed.started)], lease=resumed.lease)
    assert (await repo.get_task(task_id)).nodes["end"].waiting_for_pool is None


async def test_parked_and_queued_tasks_are_claimed_together_oldest_first(repo: Repository, saved_flow: SavedFlow) -> None:
    await saved_flow()
    old, newer, newest = await queued(repo, 3)
    await parked(repo, newer)
    assert [t.id for t in await repo.claim_tasks("w2", 60, 2, GPU)] == [old, newer]
    assert [t.id for t in await repo.claim_tasks("w2", 60, 2, GPU)] == [newest]


async def test_recovery_renewals_and_releases_never_touch_a_parked_task(repo: Repository, saved_flow: SavedFlow) -> None:
    await saved_flow()
    task_id, expired = await queued(repo, 2)
    await parked(repo, task_id)
    await repo.claim_task(expired, "w1", lease_s=0)

    assert await repo.requeue_expired() == 1, "only the expired lease"
    assert await repo.renew_leases("w1", [task_id], lease_s=60) == set()
    assert await repo.release_tasks("w1", [task_id]) == 0
    assert await repo.requeue_interrupted() == 0, "the expired one is queued already; the parked one stays"
    found = await repo.get_task(task_id)
    assert (found.status, found.lease, found.interruptions) == (TaskStatus.RUNNING, None, 0)
    [resumed] = await repo.claim_tasks("gpu-worker", 60, 1, GPU)
    assert resumed.id == task_id


async def test_a_parked_task_is_cancelled_at_once(repo: Repository, saved_flow: SavedFlow) -> None:
    await saved_flow()
    task_id, = await queued(repo, 1)
    await parked(repo, task_id, "big-gpu")

    cancelled = await repo.request_cancel(task_id)
    assert cancelled == await repo.get_task(task_id)
    assert cancelled.status is TaskStatus.CANCELLED and cancelled.finished is not None
    assert cancelled.error is not None and cancelled.error.as_dict() == {
        "node_id": None, "code": "cancelled", "message": "cancelled while waiting for a worker of pool big-gpu"}
    assert cancelled.execution_cost == 0.25 and cancelled.execution_time is not None
    end = cancelled.nodes["end"]
    assert (end.status, end.waiting_for_pool) == (NodeStatus.SKIPPED, None)
    assert cancelled.nodes["start"].status is NodeStatus.SUCCEEDED
    assert await repo.claim_tasks("gpu-worker", 60, 10, frozenset({"big-gpu"})) == []
    assert await repo.get_task(task_id) == cancelled


async def test_a_parked_child_ends_with_its_parents_cancel(repo: Repository, saved_flow: SavedFlow) -> None:
    await saved_flow()
    parent, = await queued(repo, 1)
    await repo.claim_task(parent, "w1", lease_s=60)
    child, = await queued(repo, 1, parent)
    grandchild, = await queued(repo, 1, child)
    await parked(repo, child)

    assert sorted(await repo.cancel_children(parent)) == [child, grandchild]
    ended = await repo.get_task(child)
    assert ended.status is TaskStatus.CANCELLED and ended.error is not None and "pool gpu" in ended.error.message
    assert (await repo.get_task(grandchild)).status is TaskStatus.CANCELLED
    assert (await repo.get_task(parent)).status is TaskStatus.RUNNING


async def test_a_park_is_fenced_by_the_lease(repo: Repository, saved_flow: SavedFlow) -> None:
    await saved_flow()
    task_id, = await queued(repo, 1)
    claimed = await repo.claim_task(task_id, "w1", lease_s=60)
    assert claimed is not None and claimed.lease is not None

    for stale in (Lease("w1", 2), Lease("w2", 1)):
        with pytest.raises(LeaseLost):
            await repo.park_task(task_id, "gpu", [NodeRun("end", waiting_for_pool="gpu")], lease=stale)
    with pytest.raises(TaskNotFound):
        await repo.park_task(task_id + 1, "gpu", [], lease=claimed.lease)
    untouched = await repo.get_task(task_id)
    assert untouched.lease == claimed.lease and "end" not in untouched.nodes
    assert await repo.claim_tasks("gpu-worker", 60, 1, GPU) == []

    await repo.park_task(task_id, "gpu", [NodeRun("end", waiting_for_pool="gpu")], lease=claimed.lease)
    with pytest.raises(LeaseLost):  # parked: the lease is gone
        await repo.park_task(task_id, "gpu", [], lease=claimed.lease)
    assert await repo.save_node_runs_many([(task_id, NodeRun("end", NodeStatus.RUNNING))],
                                          {task_id: claimed.lease}) == frozenset({task_id})
    assert (await repo.get_task(task_id)).nodes["end"].waiting_for_pool == "gpu"


@pytest.mark.postgres
async def test_one_reaper_at_a_time_on_postgres(repo: Repository, saved_flow: SavedFlow) -> None:
    if repo.engine.dialect.name != "postgresql":
        pytest.skip("SQLite's write lock serializes sweeps")
    await saved_flow()
    task_id, = await queued(repo, 1)
    await repo.claim_task(task_id, "dead", lease_s=0)
    async with repo.engine.begin() as other:  # another process sweeping right now
        assert (await other.execute(sa.text(f"SELECT pg_try_advisory_xact_lock({REAPER_LOCK_KEY})"))).scalar()
        assert await repo.requeue_expired() == 0
    assert await repo.requeue_expired() == 1
