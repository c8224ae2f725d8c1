"""Leases: a worker's heartbeat keeps its tasks; a dead worker's tasks go back to the queue."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from graph_runtime.flow import Flow
from graph_runtime.models import TaskStatus
from storage.repository import Repository
from tests.storage.conftest import make_request

SavedFlow = Callable[..., Awaitable[Flow]]


async def queued(repo: Repository, count: int) -> list[int]:
    return [(await repo.create_task("demo", 1, make_request(n=n)))[0].id for n in range(count)]


async def test_a_live_lease_is_not_recovered_and_an_expired_one_is(repo: Repository, saved_flow: SavedFlow) -> None:
    await saved_flow()
    alive, dead = await queued(repo, 2)
    await repo.claim_task(alive, "alive", lease_s=60)
    await repo.claim_task(dead, "dead", lease_s=0)
    assert await repo.requeue_expired() == 1
    assert (await repo.get_task(alive)).status is TaskStatus.RUNNING
    back = await repo.get_task(dead)
    assert back.status is TaskStatus.QUEUED and back.started is None
    resumed = await repo.claim_next_task("another", 60)
    assert resumed is not None and resumed.id == dead and resumed.claims == 2


async def test_renewing_keeps_only_what_the_worker_still_holds(repo: Repository, saved_flow: SavedFlow) -> None:
    await saved_flow()
    mine, lost = await queued(repo, 2)
    await repo.claim_task(mine, "w1", lease_s=0)
    await repo.claim_task(lost, "w1", lease_s=0)
    assert await repo.renew_leases("w1", [mine], lease_s=60) == {mine}
    assert await repo.requeue_expired() == 1  # `lost` was not renewed in time
    await repo.claim_task(lost, "w2", lease_s=60)
    assert await repo.renew_leases("w1", [mine, lost], lease_s=60) == {mine}, "w2 holds it now"
    assert await repo.renew_leases("w1", [], lease_s=60) == set()


async def test_release_requeues_only_the_workers_own_running_tasks(repo: Repository, saved_flow: SavedFlow) -> None:
    await saved_flow()
    mine, theirs = await queued(repo, 2)
    await repo.claim_task(mine, "w1", lease_s=60)
    await repo.claim_task(theirs, "w2", lease_s=60)
    assert await repo.release_tasks("w1", [mine, theirs]) == 1
    assert (await repo.get_task(mine)).status is TaskStatus.QUEUED
    assert (await repo.get_task(theirs)).status is TaskStatus.RUNNING
