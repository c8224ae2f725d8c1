"""Group commit on a real repository: one transaction per loop turn, in order, durable on return."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence

import pytest

from graph_runtime.commits import GroupCommitter
from graph_runtime.errors import TaskNotFound
from graph_runtime.events import EventBatch
from graph_runtime.flow import parse
from graph_runtime.models import Fenced, Lease, NodeRun, NodeStatus, TaskRequest
from storage import engine as storage_engine
from storage.repository import Repository
from tests.support import FlowBuilder


class CountingRepository(Repository):
    """The real repository, recording the size of each grouped transaction."""

    batches: list[int]

    async def save_node_runs_many(self, rows: Sequence[tuple[int, NodeRun]],
                                  leases: Mapping[int, Lease] | None = None,
                                  events: Sequence[EventBatch] = ()) -> Fenced:
        self.batches.append(len(rows))
        return await super().save_node_runs_many(rows, leases, events)


@pytest.fixture
async def repo(db_url: str) -> AsyncIterator[CountingRepository]:
    engine = storage_engine.create_engine(db_url)
    repository = CountingRepository(engine)
    repository.batches = []
    await repository.save_flow(parse(FlowBuilder("f").node("a", "start").node("b", "end").edge("a", "b").build()))
    yield repository
    await storage_engine.dispose(engine)


async def test_saves_made_in_one_turn_share_a_transaction_and_are_durable_on_return(repo: CountingRepository) -> None:
    tasks = [(await repo.create_task("f", 1, TaskRequest("a", "b", "b")))[0].id for _ in range(5)]
    committer = GroupCommitter(repo)
    await asyncio.gather(*(committer.save(t, NodeRun("a", NodeStatus.RUNNING, attempts=1)) for t in tasks))
    assert repo.batches == [5]
    for task_id in tasks:
        assert (await repo.get_task(task_id)).nodes["a"].status is NodeStatus.RUNNING


async def test_later_writes_of_a_run_win_and_a_snapshot_is_taken(repo: CountingRepository) -> None:
    task, _ = await repo.create_task("f", 1, TaskRequest("a", "b", "b"))
    committer = GroupCommitter(repo)
    run = NodeRun("a", NodeStatus.RUNNING, attempts=1)
    first = asyncio.ensure_future(committer.save(task.id, run))
    run.status = NodeStatus.SUCCEEDED  # changed after it was handed over: the queued row keeps RUNNING
    second = asyncio.ensure_future(committer.save(task.id, run))
    await asyncio.gather(first, second)
    assert (await repo.get_task(task.id)).nodes["a"].status is NodeStatus.SUCCEEDED


async def test_a_failed_commit_reaches_every_waiter(repo: CountingRepository) -> None:
    committer = GroupCommitter(repo)
    results = await asyncio.gather(committer.save(999_999, NodeRun("a")), committer.save(999_998, NodeRun("a")),
                                   return_exceptions=True)
    assert all(isinstance(r, TaskNotFound) for r in results)
    await committer.drain()


async def test_a_cancelled_caller_does_not_cancel_the_commit_others_wait_for(repo: CountingRepository) -> None:
    tasks = [(await repo.create_task("f", 1, TaskRequest("a", "b", "b")))[0].id for _ in range(2)]
    committer = GroupCommitter(repo)
    leaving = asyncio.ensure_future(committer.save(tasks[0], NodeRun("a", NodeStatus.RUNNING, attempts=1)))
    staying = asyncio.ensure_future(committer.save(tasks[1], NodeRun("a", NodeStatus.RUNNING, attempts=1)))
    await asyncio.sleep(0)  # both handed over, the flush not yet run
    leaving.cancel()
    await staying
    await committer.drain()
    assert leaving.cancelled()
    assert [(await repo.get_task(t)).nodes["a"].status for t in tasks] == [NodeStatus.RUNNING] * 2
