"""Tasks as the API sees them: submit, poll, history, idempotency, cancel."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from graph_runtime import errors
from graph_runtime.flow import Flow
from graph_runtime.models import NodeRun, NodeStatus, RunError, TaskOutcome, TaskStatus
from storage.repository import CANCELLED_BEFORE_START, Repository
from tests.storage.conftest import make_flow, make_request

SavedFlow = Callable[..., Awaitable[Flow]]
T0 = datetime(2026, 11, 23, 21, 14, 34, 800001, tzinfo=UTC)


def succeeded(node_id: str, started: datetime | None = T0, **fields: Any) -> NodeRun:
    finished = (started or T0) + timedelta(microseconds=400)
    defaults: dict[str, Any] = {"execution_time": 0.0004, "cost": 0.0, "attempts": 1}
    return NodeRun(node_id, NodeStatus.SUCCEEDED, started, finished, **{**defaults, **fields})


def is_utc(value: datetime | None) -> bool:
    return value is not None and value.utcoffset() == timedelta(0)


async def test_a_task_goes_through_its_whole_life(repo: Repository, saved_flow: SavedFlow) -> None:
    await saved_flow()
    request = make_request(image_url="https://example.com/cat.jpg", style="short")
    before = datetime.now(UTC)
    task, created = await repo.create_task("demo", 1, request, key_id="k1")
    assert created and task.status is TaskStatus.QUEUED and task.nodes == {}
    assert is_utc(task.created) and before <= task.created <= datetime.now(UTC)

    claimed = await repo.claim_next_task()
    assert claimed is not None and claimed.id == task.id and claimed.status is TaskStatus.RUNNING
    assert is_utc(claimed.started) and claimed.started >= task.created

    start = succeeded("start", output={"image_url": "https://example.com/cat.jpg", "style": "short"})
    end = NodeRun("end", NodeStatus.RUNNING, T0 + timedelta(seconds=1), attempts=1)
    await repo.save_node_runs(task.id, [start, end])
    assert (await repo.get_task(task.id)).nodes == {"start": start, "end": end}

    done_end = succeeded("end", started=end.started, cost=0.5, output={"z": 1, "a": {"b": [1, 2.5, None]}})
    outcome = TaskOutcome(TaskStatus.SUCCEEDED, T0 + timedelta(seconds=3), 3.000001, 0.5, result={"z": 1, "a": 2})
    await repo.finish_task(task.id, outcome, [done_end])

    final = await repo.get_task(task.id)
    assert final.status is TaskStatus.SUCCEEDED
    assert (final.flow_id, final.revision, final.request) == ("demo", 1, request)
    assert (final.created, final.started) == (task.created, claimed.started)
    assert final.finished == T0 + timedelta(seconds=3) and final.finished.microsecond == 800001
    assert (final.execution_time, final.execution_cost, final.error) == (3.000001, 0.5, None)
    assert list(final.result) == ["z", "a"]  # key order is the node's output order
    assert final.nodes == {"start": start, "end": done_end}
    assert list(final.nodes) == ["start", "end"]  # in the order they started
    assert all(is_utc(run.started) and is_utc(run.finished) for run in final.nodes.values())


async def test_datetimes_in_another_zone_come_back_as_the_same_instant_in_utc(
    repo: Repository, saved_flow: SavedFlow
) -> None:
    await saved_flow()
    task, _ = await repo.create_task("demo", 1, make_request())
    paris = T0.astimezone(timezone(timedelta(hours=1)))
    await repo.save_node_runs(task.id, [NodeRun("start", NodeStatus.RUNNING, started=paris)])
    stored = (await repo.get_task(task.id)).nodes["start"].started
    assert stored == T0 and stored.tzinfo == UTC and stored.microsecond == 800001


async def test_a_failed_task_keeps_its_error(repo: Repository, saved_flow: SavedFlow) -> None:
    await saved_flow()
    task, _ = await repo.create_task("demo", 1, make_request())
    await repo.claim_next_task()
    error = RunError("node_failed", "boom", "end")
    failed = NodeRun("end", NodeStatus.FAILED, T0, T0, execution_time=0.0, cost=0.0, attempts=3, error=error)
    await repo.finish_task(task.id, TaskOutcome(TaskStatus.FAILED, T0, 0.0, 0.0, error=error), [failed])
    final = await repo.get_task(task.id)
    assert (final.status, final.result, final.error) == (TaskStatus.FAILED, None, error)
    assert final.nodes["end"].attempts == 3


async def test_node_runs_are_upserted(repo: Repository, saved_flow: SavedFlow) -> None:
    await saved_flow()
    task, _ = await repo.create_task("demo", 1, make_request())
    await repo.save_node_runs(task.id, [NodeRun("start", NodeStatus.RUNNING, T0, attempts=1)])
    retried = succeeded("start", attempts=2, output={"ok": True})
    await repo.save_node_runs(task.id, [retried])
    await repo.save_node_runs(task.id, [])
    assert (await repo.get_task(task.id)).nodes == {"start": retried}


async def test_unknown_tasks_are_not_found(repo: Repository) -> None:
    outcome = TaskOutcome(TaskStatus.SUCCEEDED, T0, 0.0, 0.0)
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: repo.get_task(404),
        lambda: repo.request_cancel(404),
        lambda: repo.is_cancel_requested(404),
        lambda: repo.finish_task(404, outcome, []),
        lambda: repo.save_node_runs(404, [NodeRun("start")]),
        lambda: repo.claim_task(404),
    ]
    for call in calls:
        with pytest.raises(errors.TaskNotFound):
            await call()


async def test_a_task_needs_an_existing_revision(repo: Repository, saved_flow: SavedFlow) -> None:
    await saved_flow()
    with pytest.raises(errors.RevisionNotFound):
        await repo.create_task("demo", 2, make_request())
    with pytest.raises(errors.RevisionNotFound):
        await repo.create_task("nope", 1, make_request())
    assert await repo.count_tasks() == 0


async def test_a_task_created_if_latest_needs_the_latest_revision_of_a_flow_not_deleted(
        repo: Repository, saved_flow: SavedFlow) -> None:
    await saved_flow()
    task, created = await repo.create_task("demo", 1, make_request(), if_latest=True)
    assert created and task.revision == 1
    await repo.save_flow(make_flow(description="changed"))  # revision 2
    for key in (None, "k"):
        with pytest.raises(errors.StaleRevision):
            await repo.create_task("demo", 1, make_request(), if_latest=True, idempotency_key=key, fingerprint="f")
    assert (await repo.create_task("demo", 1, make_request()))[1], "without if_latest: any stored revision"
    assert (await repo.create_task("demo", 2, make_request(), if_latest=True, idempotency_key="k", fingerprint="f"))[1]
    again, created = await repo.create_task("demo", 2, make_request(), if_latest=True, idempotency_key="k", fingerprint="f")
    assert not created and again.revision == 2, "a key already used answers with its task"
    await repo.delete_flow("demo")
    with pytest.raises(errors.StaleRevision):
        await repo.create_task("demo", 2, make_request(), if_latest=True)
    assert await repo.count_tasks() == 3


async def test_task_ids_are_increasing_numbers(repo: Repository, saved_flow: SavedFlow) -> None:
    await saved_flow()
    ids = [(await repo.create_task("demo", 1, make_request()))[0].id for _ in range(3)]
    assert ids == sorted(ids) and len(set(ids)) == 3 and all(isinstance(i, int) for i in ids)


# -- idempotency -------------------------------------------------------------------------------


async def test_the_same_key_and_request_returns_the_first_task(repo: Repository, saved_flow: SavedFlow) -> None:
    await saved_flow()
    first, created = await repo.create_task("demo", 1, make_request(), idempotency_key="run-1", fingerprint="f")
    again, created_again = await repo.create_task("demo", 1, make_request(), idempotency_key="run-1", fingerprint="f")
    assert created and not created_again
    assert again == first
    assert await repo.count_tasks() == 1


async def test_the_same_key_with_another_request_is_a_conflict(repo: Repository, saved_flow: SavedFlow) -> None:
    await saved_flow()
    await repo.create_task("demo", 1, make_request(), idempotency_key="run-1", fingerprint="f")
    with pytest.raises(errors.IdempotencyConflict):
        await repo.create_task("demo", 1, make_request(x=1), idempotency_key="run-1", fingerprint="g")
    assert await repo.count_tasks() == 1


async def test_keys_are_per_flow_and_optional(repo: Repository, saved_flow: SavedFlow) -> None:
    await saved_flow("a")
    await saved_flow("b")
    a, _ = await repo.create_task("a", 1, make_request(), idempotency_key="k", fingerprint="f")
    b, created = await repo.create_task("b", 1, make_request(), idempotency_key="k", fingerprint="f")
    assert created and a.id != b.id
    plain = [await repo.create_task("a", 1, make_request()) for _ in range(2)]
    assert all(created for _, created in plain)
    assert await repo.count_tasks() == 4


async def test_concurrent_creates_with_one_key_make_one_task(
    make_repository: Callable[[], Repository], saved_flow: SavedFlow
) -> None:
    await saved_flow()
    repos = [make_repository(), make_repository()]  # two processes
    results = await asyncio.gather(
        *(repos[i % 2].create_task("demo", 1, make_request(), idempotency_key="k", fingerprint="f") for i in range(12))
    )
    assert len({task.id for task, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    assert await repos[0].count_tasks() == 1


# -- cancel ------------------------------------------------------------------------------------


async def test_cancelling_a_queued_task_ends_it_at_once(repo: Repository, saved_flow: SavedFlow) -> None:
    await saved_flow()
    task, _ = await repo.create_task("demo", 1, make_request())
    cancelled = await repo.request_cancel(task.id)
    assert cancelled.status is TaskStatus.CANCELLED
    assert is_utc(cancelled.finished) and cancelled.started is None
    assert (cancelled.execution_time, cancelled.execution_cost) == (None, 0.0)
    assert cancelled.error is not None and cancelled.error.as_dict() == CANCELLED_BEFORE_START
    assert await repo.get_task(task.id) == cancelled
    assert await repo.claim_next_task() is None


async def test_cancelling_a_running_task_flags_it(repo: Repository, saved_flow: SavedFlow) -> None:
    await saved_flow()
    task, _ = await repo.create_task("demo", 1, make_request())
    await repo.claim_next_task()
    await repo.save_node_runs(task.id, [NodeRun("start", NodeStatus.RUNNING, T0)])
    assert not await repo.is_cancel_requested(task.id)
    flagged = await repo.request_cancel(task.id)
    assert flagged.status is TaskStatus.RUNNING and list(flagged.nodes) == ["start"]
    assert await repo.is_cancel_requested(task.id)
    assert await repo.request_cancel(task.id) == flagged  # asking twice is harmless


async def test_cancelling_an_ended_task_is_refused(repo: Repository, saved_flow: SavedFlow) -> None:
    await saved_flow()
    task, _ = await repo.create_task("demo", 1, make_request())
    await repo.request_cancel(task.id)
    with pytest.raises(errors.TaskEnded):
        await repo.request_cancel(task.id)


async def test_cancel_racing_a_claim_either_cancels_or_flags(repo: Repository, saved_flow: SavedFlow) -> None:
    await saved_flow()
    for _ in range(5):
        task, _ = await repo.create_task("demo", 1, make_request())
        claimed, cancelled = await asyncio.gather(repo.claim_next_task(), repo.request_cancel(task.id))
        if claimed is None:
            assert cancelled.status is TaskStatus.CANCELLED
        else:
            assert claimed.id == task.id and cancelled.status is TaskStatus.RUNNING
            assert await repo.is_cancel_requested(task.id)
            await repo.finish_task(task.id, TaskOutcome(TaskStatus.CANCELLED, T0, 0.0, 0.0), [])


# -- history -----------------------------------------------------------------------------------


async def test_list_tasks_newest_first_with_filters_and_pages(repo: Repository, saved_flow: SavedFlow) -> None:
    await saved_flow("a")
    await saved_flow("b")
    ids = [(await repo.create_task(flow_id, 1, make_request()))[0].id for flow_id in "ababa"]
    await repo.claim_next_task()  # ids[0] runs
    await repo.save_node_runs(ids[0], [NodeRun("start", NodeStatus.SUCCEEDED, T0)])
    await repo.save_node_runs(ids[1], [NodeRun("end", NodeStatus.PENDING)])

    newest_first = list(reversed(ids))
    assert [t.id for t in await repo.list_tasks()] == newest_first
    assert [t.id for t in await repo.list_tasks(limit=2)] == newest_first[:2]
    assert [t.id for t in await repo.list_tasks(limit=2, before=newest_first[1])] == newest_first[2:4]
    assert [t.id for t in await repo.list_tasks(flow_id="a")] == [ids[4], ids[2], ids[0]]
    assert [t.id for t in await repo.list_tasks(status=TaskStatus.RUNNING)] == [ids[0]]
    assert [t.id for t in await repo.list_tasks(flow_id="b", status=TaskStatus.QUEUED, before=ids[3])] == [ids[1]]
    assert await repo.list_tasks(flow_id="nope") == []

    by_id = {t.id: t for t in await repo.list_tasks()}
    assert list(by_id[ids[0]].nodes) == ["start"] and list(by_id[ids[1]].nodes) == ["end"]
    assert by_id[ids[2]].nodes == {}


async def test_count_tasks_by_status(repo: Repository, saved_flow: SavedFlow) -> None:
    await saved_flow()
    for _ in range(3):
        await repo.create_task("demo", 1, make_request())
    await repo.claim_next_task()
    assert await repo.count_tasks() == 3
    assert await repo.count_tasks(TaskStatus.QUEUED) == 2
    assert await repo.count_tasks(TaskStatus.RUNNING) == 1
    assert await repo.count_tasks(TaskStatus.SUCCEEDED) == 0


async def test_values_the_tables_cannot_hold_are_refused_as_such(repo: Repository, saved_flow: SavedFlow) -> None:
    await saved_flow()
    task, _ = await repo.create_task("demo", 1, make_request())
    with pytest.raises(ValueError, match="naive datetime"):
        await repo.save_node_runs(task.id, [NodeRun("start", NodeStatus.RUNNING, started=datetime(2026, 1, 1))])
    with pytest.raises(TypeError, match="JSON serial"):
        await repo.save_node_runs(task.id, [NodeRun("start", NodeStatus.SUCCEEDED, output={"x": object()})])
    assert (await repo.get_task(task.id)).nodes == {}
