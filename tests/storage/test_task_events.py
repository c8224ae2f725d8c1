"""Stored task events (SPEC §11) on SQLite and PostgreSQL: read back by number, several tasks in one
read, and fenced by the writer's lease epoch (SPEC §10) so a worker that lost its lease records
no event and never takes a number the resuming worker wrote."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import sqlalchemy as sa

from graph_runtime.events import EventBatch, EventKind, TaskEvent
from graph_runtime.flow import Flow
from graph_runtime.models import NodeRun, NodeStatus, RunError, Task, TaskStatus
from storage import event_data, tables
from storage.repository import Repository
from storage.task_events import TaskEventLog
from tests.storage.conftest import make_request

SavedFlow = Callable[..., Awaitable[Flow]]


def _event(task_id: int, seq: int, epoch: int | None, text: str = "x", *, final: bool = False) -> EventBatch:
    return EventBatch(task_id, epoch, [(seq, EventKind.LOG, {"node_id": "n", "message": text})], final)


def _typed(event: TaskEvent) -> object:
    return event_data.decode(event.kind, event.data)


async def test_events_come_back_by_number_for_several_tasks_at_once(repo: Repository, saved_flow: SavedFlow) -> None:
    await saved_flow()
    log = TaskEventLog(repo.engine)
    first = (await repo.create_task("demo", 1, make_request()))[0].id
    second = (await repo.create_task("demo", 1, make_request(n=2)))[0].id
    await repo.save_node_runs_many([], {}, [_event(first, seq, None, f"a{seq}") for seq in (1, 2, 3)]
                     + [_event(second, 1, None, "b1", final=True)])
    assert await log.last_seq(first) == 3 and await log.last_seq(second) == 1 and await log.last_seq(999) == 0
    found = await log.since({first: 1, second: 0})
    assert [(e.task_id, e.seq, e.data["message"]) for e in found] == [(first, 2, "a2"), (first, 3, "a3"),
                                                                      (second, 1, "b1")]
    assert found[-1].final and not found[0].final and found[0].kind is EventKind.LOG


async def test_node_and_task_snapshots_come_back_as_they_were_and_json_events_as_json(
        repo: Repository, saved_flow: SavedFlow) -> None:
    """Task and node events are stored as arrays by position (not as the API's JSON): every field
    a view shows comes back, a node's output stays in its row, a map's item runs stay out of its
    task's events (the map's run counts them), and an event stored as JSON (by an earlier
    version) reads back as that JSON."""
    await saved_flow()
    log = TaskEventLog(repo.engine)
    task = (await repo.create_task("demo", 1, make_request(), node_ids=["b", "m", "c", "g", "p"]))[0]
    now = datetime.now(UTC)
    failed = NodeRun("b", NodeStatus.FAILED, now, now.replace(microsecond=0), 0.25, 0.5, 2,
                     RunError("node_failed", "boom", "b"), {"big": "output"}, False, None)
    mapped = NodeRun("m", NodeStatus.RUNNING, now, attempts=1, items={"total": 3, "succeeded": 1, "running": 2})
    item = NodeRun("m[0]", NodeStatus.SUCCEEDED, now, now, 0.1, 0.0, 1)
    cached = NodeRun("c", NodeStatus.SUCCEEDED, now, now, 0.0, 0.0, 1, cached=True, saved_cost=0.75)
    waiting = NodeRun("g", waiting_for_pool="gpu")
    pending = NodeRun("p")
    started = dataclasses.replace(task, status=TaskStatus.RUNNING, started=now,
                                  nodes={run.node_id: run for run in (pending, NodeRun("q"))})
    ended = dataclasses.replace(task, status=TaskStatus.FAILED, started=now, finished=now, execution_time=1.5,
                                execution_cost=0.5, error=RunError("node_failed", "boom", "b"), result={"r": [1, "x"]},
                                nodes={run.node_id: run for run in (failed, mapped, item, cached, waiting, pending)})
    old = {"node_id": "old", "status": "running", "started": "2026-11-29T10:00:00.000001Z"}
    await repo.save_node_runs_many([], {}, [EventBatch(task.id, None, [
        (1, EventKind.TASK, event_data.task_data(started)), (2, EventKind.NODE, event_data.node_data(failed)),
        (3, EventKind.NODE, event_data.node_data(mapped)), (4, EventKind.NODE, old),
        (5, EventKind.TASK, event_data.task_data(ended))], final=True)])
    back = await log.since({task.id: 0})
    assert [e.seq for e in back] == [1, 2, 3, 4, 5] and back[-1].final
    assert _typed(back[0]) == started
    assert _typed(back[1]) == dataclasses.replace(failed, output=None)
    assert _typed(back[2]) == mapped
    assert _typed(back[3]) == old
    stored = _typed(back[4])
    assert isinstance(stored, Task)
    assert stored == dataclasses.replace(ended, nodes={k: dataclasses.replace(r, output=None)
                                                       for k, r in ended.nodes.items() if k != "m[0]"})
    assert list(stored.nodes) == ["b", "m", "c", "g", "p"], "in the task's order, without the map's items"


async def test_a_final_event_stores_the_runs_its_node_events_told_once_and_reads_them_back_whole(
        repo: Repository, saved_flow: SavedFlow) -> None:
    """A run the final task event lists as its node's last event said is stored as that event's
    number, within the same row only; read from any number on, the final event is the whole task."""
    await saved_flow()
    log = TaskEventLog(repo.engine)
    task = (await repo.create_task("demo", 1, make_request(), node_ids=["a", "b", "c"]))[0]
    now = datetime.now(UTC)
    a = NodeRun("a", NodeStatus.SUCCEEDED, now, now, 0.1, 0.0, 1)
    b = NodeRun("b", NodeStatus.RUNNING, now, attempts=1)
    told = {"a": event_data.node_data(a), "b": event_data.node_data(b)}
    b.status, b.finished = NodeStatus.SKIPPED, now  # changed after its last event: stored whole
    ended = dataclasses.replace(task, status=TaskStatus.SUCCEEDED, started=now, finished=now,
                                nodes={"a": a, "b": b, "c": NodeRun("c")})
    final = event_data.task_data(ended, told)
    assert final[13][0] is told["a"] and final[13][1] is not told["b"] and final[13][2] == "c"
    await repo.save_node_runs_many([], {}, [EventBatch(task.id, None, [
        (1, EventKind.NODE, told["a"]), (2, EventKind.NODE, told["b"]), (3, EventKind.TASK, final)], final=True)])
    async with repo.engine.connect() as conn:
        stored = (await conn.execute(sa.select(tables.task_event_batch.c.events))).scalar_one()
    entries = stored if isinstance(stored, list) else json.loads(stored)
    assert entries[-1][2][13][0] == 1 and isinstance(entries[-1][2][13][1], list), "a's run is event 1's number"
    for after in (0, 1, 2):
        back = await log.since({task.id: after})
        assert [e.seq for e in back] == list(range(after + 1, 4))
        assert _typed(back[-1]) == dataclasses.replace(ended, nodes={k: dataclasses.replace(r, output=None)
                                                                      for k, r in ended.nodes.items()})
    # In a row of its own (someone read the node events as they came), it points at nothing.
    other = (await repo.create_task("demo", 1, make_request(n=2), node_ids=["a"]))[0]
    alone = event_data.task_data(dataclasses.replace(ended, id=other.id, nodes={"a": a}), told)
    await repo.save_node_runs_many([], {}, [EventBatch(other.id, None, [(1, EventKind.NODE, told["a"])])])
    await repo.save_node_runs_many([], {}, [EventBatch(other.id, None, [(2, EventKind.TASK, alone)], final=True)])
    back = await log.since({other.id: 1})
    assert [e.seq for e in back] == [2] and _typed(back[0]).nodes == {"a": a}


async def test_a_worker_that_lost_its_lease_stores_no_event(repo: Repository, saved_flow: SavedFlow) -> None:
    await saved_flow()
    log = TaskEventLog(repo.engine)
    task = (await repo.create_task("demo", 1, make_request()))[0]
    stale = await repo.claim_task(task.id, "w1", lease_s=0.01)
    assert stale is not None and stale.lease is not None
    await repo.save_node_runs_many([], {}, [_event(task.id, 1, stale.lease.epoch, "w1 ran")])
    # w1 froze; its lease ran out; w2 resumed the task (a new claim, a new epoch).
    await asyncio.sleep(0.05)
    assert await repo.requeue_expired(exclude_worker="w2") == 1
    resumed = await repo.claim_task(task.id, "w2", lease_s=60)
    assert resumed is not None and resumed.lease is not None and resumed.lease.epoch > stale.lease.epoch
    # w1 wakes and reports, with the number w2 is about to use: refused. w2's event takes the number.
    late = await repo.save_node_runs_many([], {}, [_event(task.id, 2, stale.lease.epoch, "w1 late")])
    assert late.events == {(task.id, stale.lease.epoch)}, "w1 is told, so that its own streams are not handed it"
    assert (await repo.save_node_runs_many([], {}, [_event(task.id, 2, resumed.lease.epoch, "w2 ran")])).events == set()
    assert [e.data["message"] for e in await log.since({task.id: 0})] == ["w1 ran", "w2 ran"]
    # A number already written is kept whoever writes it again.
    await repo.save_node_runs_many([], {}, [_event(task.id, 2, resumed.lease.epoch, "again")])
    assert [e.data["message"] for e in await log.since({task.id: 1})] == ["w2 ran"]


async def test_a_retried_commit_that_goes_further_replaces_the_shorter_batch_and_none_is_doubled(
        repo: Repository, saved_flow: SavedFlow) -> None:
    await saved_flow()
    log = TaskEventLog(repo.engine)
    task = (await repo.create_task("demo", 1, make_request()))[0]
    # A commit of events 1-2 whose answer was lost (PostgreSQL's connection dropped in COMMIT):
    # the writer retries them with the events made since, as one batch from 1.
    await repo.save_node_runs_many([], {}, [_event(task.id, seq, None, f"e{seq}") for seq in (1, 2)])
    await repo.save_node_runs_many([], {}, [_event(task.id, seq, None, f"e{seq}") for seq in (1, 2, 3, 4)])
    assert [e.seq for e in await log.since({task.id: 0})] == [1, 2, 3, 4] and await log.last_seq(task.id) == 4
    # A shorter batch from a number written already changes nothing.
    await repo.save_node_runs_many([], {}, [_event(task.id, seq, None, "late") for seq in (1, 2, 3)])
    await repo.save_node_runs_many([], {}, [_event(task.id, 5, None, "e5", final=True)])
    found = await log.since({task.id: 0})
    assert [(e.seq, e.data["message"], e.final) for e in found] == [
        (1, "e1", False), (2, "e2", False), (3, "e3", False), (4, "e4", False), (5, "e5", True)]
    # Resuming inside a batch, at its end, and past the last event.
    assert [e.seq for e in await log.since({task.id: 2})] == [3, 4, 5]
    assert [e.seq for e in await log.since({task.id: 4})] == [5]
    assert await log.since({task.id: 5}) == []


async def test_a_commit_with_a_hole_in_a_tasks_numbers_and_two_writers_from_one_number_loses_nothing(
        repo: Repository, saved_flow: SavedFlow) -> None:
    await saved_flow()
    log = TaskEventLog(repo.engine)
    task = (await repo.create_task("demo", 1, make_request()))[0]
    # 1, 2 and 4 in one commit, 3 (a late report) in the next: every read finds all four.
    await repo.save_node_runs_many([], {}, [_event(task.id, seq, None, f"e{seq}", final=seq == 4) for seq in (1, 2, 4)])
    await repo.save_node_runs_many([], {}, [_event(task.id, 3, None, "e3")])
    assert [e.seq for e in await log.since({task.id: 0})] == [1, 2, 3, 4]
    assert [(e.seq, e.final) for e in await log.since({task.id: 3})] == [(4, True)]
    assert await log.last_seq(task.id) == 4
    # Two writers' batches from one number in one commit (both pass the fence): the longer is kept,
    # and the commit goes through on both engines.
    other = (await repo.create_task("demo", 1, make_request(n=2)))[0]
    claimed = await repo.claim_task(other.id, "w1", lease_s=60)
    assert claimed is not None and claimed.lease is not None
    await repo.save_node_runs_many([], {}, [_event(other.id, 1, None, "a1"), _event(other.id, 1, claimed.lease.epoch, "b1"),
                                            _event(other.id, 2, claimed.lease.epoch, "b2")])
    assert [e.data["message"] for e in await log.since({other.id: 0})] == ["b1", "b2"]


async def test_a_batch_in_the_previous_shape_reads_back_the_same(repo: Repository, saved_flow: SavedFlow) -> None:
    """Batches written before events lost their (never shown) time: ``[seq, kind, at, data]``, each
    node run with all twelve fields. They read back as the same events the new shape gives."""
    await saved_flow()
    log = TaskEventLog(repo.engine)
    task = (await repo.create_task("demo", 1, make_request(), node_ids=["a"]))[0]
    at, started = "2026-11-30T21:00:00.000001Z", "2026-11-30T21:00:00.000002Z"
    node = ["a", "succeeded", started, started, 0.25, 0.0, 1, None, False, None, None, None]
    async with repo.engine.begin() as conn:
        await conn.execute(sa.insert(tables.task_event_batch).values(
            task_id=task.id, seq=1, last_seq=2, final=False,
            events=[[1, "node", at, node], [2, "log", at, {"node_id": "a", "message": "hi"}]]))
    await repo.save_node_runs_many([], {}, [EventBatch(task.id, None, [(3, EventKind.NODE, event_data.node_data(NodeRun(
        "a", NodeStatus.SUCCEEDED, datetime.fromisoformat(started), datetime.fromisoformat(started), 0.25, 0.0, 1)))])])
    old, log_line, new = await log.since({task.id: 0})
    assert _typed(old) == _typed(new) == NodeRun("a", NodeStatus.SUCCEEDED, datetime.fromisoformat(started),
                                           datetime.fromisoformat(started), 0.25, 0.0, 1)
    assert (old.seq, old.kind, log_line.data, new.seq) == (1, EventKind.NODE, {"node_id": "a", "message": "hi"}, 3)
