"""The events hub between two processes' worth of hubs on one real SQLite file: one writes a task's
events, the other's subscribers — joining early, late, and with Last-Event-ID — each see every
event after their start exactly once, in order, and stop at the final one."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime

import pytest

from graph_runtime.commits import GroupCommitter
from graph_runtime.events import FANOUT_HOLD, HOLD_S, EventHub, EventKind, TaskEvent
from graph_runtime.models import Lease, NodeRun, Task, TaskOutcome, TaskRequest, TaskStatus
from storage import engine as storage_engine
from storage.repository import Repository
from storage.task_events import TaskEventLog
from tests.support import FlowBuilder, eventually


@pytest.fixture
async def repo(db_url: str) -> AsyncIterator[Repository]:
    engine = storage_engine.create_engine(db_url)
    repository = Repository(engine)
    from graph_runtime.flow import parse

    await repository.save_flow(parse(FlowBuilder("f").node("s", "start").node("e", "end").edge("s", "e").build()))
    yield repository
    await storage_engine.dispose(engine)


async def stopped(hub: EventHub, task: Task) -> None:
    """``hub.task_stopped``, awaited when it has events left to store."""
    if (storing := hub.task_stopped(task)) is not None:
        await storing


async def _collect(hub: EventHub, task_id: int, after: int = 0) -> list[int]:
    return [event.seq async for event in hub.subscribe(task_id, after)]


async def test_subscribers_in_another_process_see_each_event_once_in_order(repo: Repository) -> None:
    created, _ = await repo.create_task("f", 1, TaskRequest("s", "e", "e"))
    claimed = await repo.claim_task(created.id, "w1", 60)
    assert claimed is not None and claimed.lease is not None
    writer = EventHub(GroupCommitter(repo), TaskEventLog(repo.engine))
    reader = EventHub(GroupCommitter(repo), TaskEventLog(repo.engine), poll_s=0.01)
    try:
        await writer.task_started(claimed)  # seq 1
        early = [asyncio.ensure_future(_collect(reader, claimed.id)) for _ in range(3)]
        resumed = asyncio.ensure_future(_collect(reader, claimed.id, after=1))
        late: list[asyncio.Future[list[int]]] = []
        for step in range(40):
            writer.node_said(claimed.id, EventKind.PROGRESS, {"node_id": "s", "fraction": step / 40})
            if step % 8 == 0:
                await writer.flush()
                await asyncio.sleep(0.02)
                late.append(asyncio.ensure_future(_collect(reader, claimed.id, after=step // 2)))
        ended = Task(claimed.id, "f", 1, claimed.request, TaskStatus.SUCCEEDED, lease=Lease("w1", claimed.claims),
                     claims=claimed.claims, finished=datetime.now(UTC))
        await stopped(writer, ended)  # the final event: seq 42
        everything = list(range(1, 43))
        for reading in early:
            assert await asyncio.wait_for(reading, 10) == everything
        assert await asyncio.wait_for(resumed, 10) == everything[1:]
        for index, reading in enumerate(late):
            assert await asyncio.wait_for(reading, 10) == everything[(index * 8) // 2:], index
    finally:
        await writer.close()
        await reader.close()


class EventBatches(Repository):
    """The real repository, recording how many events each grouped commit carried."""

    event_batches: list[int]

    async def save_node_runs_many(self, rows, leases=None, events=()):  # type: ignore[no-untyped-def]
        if events:
            self.event_batches.append(sum(len(batch.entries) for batch in events))
        return await super().save_node_runs_many(rows, leases, events)


async def test_events_nobody_reads_are_gathered_and_a_stream_opened_mid_task_gets_them_and_then_each_at_once(
        db_url: str) -> None:
    from graph_runtime.events import EVENTS_LATER_S
    from graph_runtime.flow import parse

    engine = storage_engine.create_engine(db_url)
    repo = EventBatches(engine)
    repo.event_batches = []
    await repo.save_flow(parse(FlowBuilder("f").node("s", "start").node("e", "end").edge("s", "e").build()))
    created, _ = await repo.create_task("f", 1, TaskRequest("s", "e", "e"))
    claimed = await repo.claim_task(created.id, "w1", 60)
    assert claimed is not None
    hub = EventHub(GroupCommitter(repo), TaskEventLog(engine))
    try:
        await hub.task_started(claimed)  # seq 1
        for step in range(9):  # seq 2..10, nobody reading: none is written yet
            hub.node_said(claimed.id, EventKind.PROGRESS, {"node_id": "s", "fraction": step / 10})
            await asyncio.sleep(0)
        assert repo.event_batches == []
        await asyncio.sleep(EVENTS_LATER_S * 3)  # ...but within a moment, in one commit
        assert repo.event_batches == [10]
        assert [e.seq for e in await hub.history(claimed.id)] == list(range(1, 11))

        hub.node_said(claimed.id, EventKind.LOG, {"node_id": "s", "message": "pending"})  # seq 11, unstored
        stream = hub.subscribe(claimed.id)
        seen = [(await anext(stream)).seq for _ in range(11)]  # type: ignore[union-attr]
        assert seen == list(range(1, 12))  # what was pending is stored and handed out first
        started = asyncio.get_running_loop().time()
        hub.node_said(claimed.id, EventKind.LOG, {"node_id": "s", "message": "live"})  # seq 12: read now
        live = await asyncio.wait_for(anext(stream), 5)
        assert live is not None and live.seq == 12
        assert asyncio.get_running_loop().time() - started < EVENTS_LATER_S  # not gathered: someone reads
        await stream.aclose()
    finally:
        await hub.close()
        await storage_engine.dispose(engine)


async def test_a_delivery_to_many_streams_is_written_a_moment_later_with_what_follows(repo: Repository) -> None:
    """From FANOUT_HOLD streams on, a delivery's writes are held for HOLD_S, so two events a few
    ms apart reach each stream in one write; every stream still gets every event once, in order,
    and ends with the final one."""
    created, _ = await repo.create_task("f", 1, TaskRequest("s", "e", "e"))
    claimed = await repo.claim_task(created.id, "w1", 60)
    assert claimed is not None
    hub = EventHub(GroupCommitter(repo), TaskEventLog(repo.engine))
    streams = FANOUT_HOLD + 36
    history: list[list[int]] = [[] for _ in range(streams)]  # yielded: what was stored before the stream
    writes: list[list[list[int]]] = [[] for _ in range(streams)]  # written live, one list per write

    def writer(index: int) -> Callable[[Sequence[TaskEvent]], bool]:
        def write(events: Sequence[TaskEvent]) -> bool:
            writes[index].append([event.seq for event in events])
            return True
        return write

    async def follow(index: int) -> None:
        async for batch in hub.subscribe_batches(claimed.id, write=writer(index)):
            history[index] += [event.seq for event in batch or ()]

    try:
        await hub.task_started(claimed)  # seq 1
        await hub.flush()
        followers = [asyncio.ensure_future(follow(index)) for index in range(streams)]
        await eventually(lambda: all(history))
        await asyncio.sleep(0.05)  # each has asked for more: it writes live from here
        hub.node_said(claimed.id, EventKind.LOG, {"node_id": "s", "message": "a"})  # seq 2
        await asyncio.sleep(HOLD_S / 5)
        hub.node_said(claimed.id, EventKind.LOG, {"node_id": "s", "message": "b"})  # seq 3: the same write
        await eventually(lambda: all(sum(map(len, w)) == 2 for w in writes))
        assert all(h == [1] and w == [[2, 3]] for h, w in zip(history, writes, strict=True)), (history[0], writes[0])
        ended = Task(claimed.id, "f", 1, claimed.request, TaskStatus.SUCCEEDED,
                     lease=Lease("w1", claimed.claims), claims=claimed.claims, finished=datetime.now(UTC))
        await stopped(hub, ended)  # the final event, seq 4: every stream ends with it
        await asyncio.wait_for(asyncio.gather(*followers), 10)
        assert all(w == [[2, 3], [4]] for w in writes), writes[0]
    finally:
        await hub.close()


async def test_a_report_made_while_the_end_is_being_written_is_stored_and_numbered_before_the_end(
        repo: Repository) -> None:
    created, _ = await repo.create_task("f", 1, TaskRequest("s", "e", "e"))
    claimed = await repo.claim_task(created.id, "w1", 60)
    assert claimed is not None and claimed.lease is not None
    committer = GroupCommitter(repo)
    hub = EventHub(committer, TaskEventLog(repo.engine))
    log = TaskEventLog(repo.engine)
    try:
        await hub.task_started(claimed)  # seq 1, waiting with its task
        hub.node_said(claimed.id, EventKind.LOG, {"node_id": "s", "message": "two"})  # seq 2
        taken = hub.unstored(claimed.id)  # the executor's finish takes them for the end's transaction...
        await committer.drain()  # ...and awaits the committer: a node's thread reports meanwhile
        hub.node_said(claimed.id, EventKind.LOG, {"node_id": "s", "message": "three"})  # seq 3
        ended = dataclasses.replace(claimed, status=TaskStatus.SUCCEEDED, finished=datetime.now(UTC))
        final = hub.final_event(ended)
        assert final is not None and final.last == 4
        outcome = TaskOutcome(TaskStatus.SUCCEEDED, ended.finished, 0.1, 0.0)  # type: ignore[arg-type]
        await repo.finish_task(claimed.id, outcome, [], lease=claimed.lease, events=[*taken, final])
        hub.end_stored([*taken, final])
        await stopped(hub, ended)  # seq 3 is stored before the task is let go
        assert [e.seq for e in await log.since({claimed.id: 0})] == [1, 2, 3, 4]
        assert [(e.seq, e.final) for e in await log.since({claimed.id: 3})] == [(4, True)]  # a resume at 3
        assert await log.since({claimed.id: 4}) == []
    finally:
        await hub.close()


async def test_open_streams_share_one_copy_of_a_history_and_keep_none_once_closed(repo: Repository) -> None:
    """A stream can stay open for hours on a task of a thousand nodes: the streams open on a task
    share one copy of its history (one read, one rendering), and none is kept once they close.
    (Before, 1,000 streams on a 315-node task each held their own: 325,000 node runs, which the
    server's full garbage collections scanned.)"""
    created, _ = await repo.create_task("f", 1, TaskRequest("s", "e", "e"))
    claimed = await repo.claim_task(created.id, "w1", 60)
    assert claimed is not None
    claimed.nodes = {f"n{i}": NodeRun(f"n{i}") for i in range(300)}  # the start event lists them all
    hub = EventHub(GroupCommitter(repo), TaskEventLog(repo.engine))
    streams = 20
    written: list[list[TaskEvent]] = [[] for _ in range(streams)]

    async def follow(index: int) -> None:  # as the event route reads a subscription
        async for batch in hub.subscribe_batches(claimed.id, write=lambda events: True):
            written[index] += batch or ()
            del batch

    def histories() -> int:  # copies of the history held: its one event (300 nodes' data)
        gc.collect()
        return sum(1 for o in gc.get_objects() if type(o) is TaskEvent and o.task_id == claimed.id)

    try:
        await hub.task_started(claimed)  # seq 1: 300 node runs
        await hub.flush()
        before = histories()
        followers = [asyncio.ensure_future(follow(index)) for index in range(streams)]
        await eventually(lambda: all(written))
        assert all(w[0] is written[0][0] for w in written), "each stream read and rendered the history again"
        assert all(len(w) == 1 and w[0].seq == 1 and len(w[0].data[-1]) == 300 for w in written)
        written.clear()
        await asyncio.sleep(0.05)  # each is waiting for live events now
        assert histories() - before <= 1, "each open stream keeps its own copy of the history"
        for follower in followers:
            follower.cancel()
        await asyncio.gather(*followers, return_exceptions=True)
        assert histories() - before < 1, "the history is kept after its streams closed"
    finally:
        await hub.close()


async def test_a_stream_opening_beside_others_gets_every_event_once_from_the_shared_history(
        repo: Repository) -> None:
    """The shared history grows with what is delivered live: a stream opening later (from the
    start, or with Last-Event-ID) gets exactly what a read of the log would give, in order."""
    created, _ = await repo.create_task("f", 1, TaskRequest("s", "e", "e"))
    claimed = await repo.claim_task(created.id, "w1", 60)
    assert claimed is not None
    hub = EventHub(GroupCommitter(repo), TaskEventLog(repo.engine))
    log = TaskEventLog(repo.engine)
    try:
        await hub.task_started(claimed)  # seq 1
        first = asyncio.ensure_future(_collect(hub, claimed.id))
        await asyncio.sleep(0.05)
        for step in range(5):  # seq 2..6, delivered live to the first stream
            hub.node_said(claimed.id, EventKind.LOG, {"node_id": "s", "message": f"m{step}"})
            await hub.flush()
        later = [asyncio.ensure_future(_collect(hub, claimed.id, after)) for after in (0, 3, 6)]
        await asyncio.sleep(0.05)
        hub.node_said(claimed.id, EventKind.LOG, {"node_id": "s", "message": "m5"})  # seq 7
        ended = Task(claimed.id, "f", 1, claimed.request, TaskStatus.SUCCEEDED,
                     lease=Lease("w1", claimed.claims), claims=claimed.claims, finished=datetime.now(UTC))
        await stopped(hub, ended)  # seq 8
        got = await asyncio.wait_for(asyncio.gather(first, *later), 10)
        stored = [event.seq for event in await log.since({claimed.id: 0})]
        assert stored == list(range(1, 9))
        assert got == [stored, stored, stored[3:], stored[6:]]
    finally:
        await hub.close()


async def test_a_stream_opening_later_gets_what_the_log_holds_not_an_event_the_store_refused(
        repo: Repository) -> None:
    """A worker that lost its task (another claimed it: its lease epoch is fenced off) makes a late
    report, and the store refuses it. Its own open stream is not handed it, and gets the new
    owner's event with that number once the worker lets the task go; a stream opening afterwards
    in that process gets the history the log holds (the shared history is made only of what the
    log gave)."""
    created, _ = await repo.create_task("f", 1, TaskRequest("s", "e", "e"))
    first = await repo.claim_task(created.id, "w1", 0.01)
    assert first is not None
    log = TaskEventLog(repo.engine)
    lost = EventHub(GroupCommitter(repo), log, poll_s=0.01)
    owner = EventHub(GroupCommitter(repo), TaskEventLog(repo.engine), poll_s=0.01)
    seen: list[tuple[int, EventKind]] = []

    async def follow() -> None:
        def write(events: Sequence[TaskEvent]) -> bool:
            seen.extend((e.seq, e.kind) for e in events)
            return True
        async for batch in lost.subscribe_batches(created.id, write=write):
            seen.extend((e.seq, e.kind) for e in batch or ())

    early = asyncio.ensure_future(follow())
    try:
        await lost.task_started(first)  # seq 1
        await lost.flush()
        await eventually(lambda: seen == [(1, EventKind.TASK)] or None)
        await asyncio.sleep(0.05)
        assert await repo.requeue_expired() == 1
        second = await repo.claim_task(created.id, "w2", 60)
        assert second is not None and second.claims == 2
        lost.node_said(created.id, EventKind.LOG, {"node_id": "s", "message": "refused"})  # seq 2, fenced off
        await lost.flush()
        await owner.task_started(second)  # the real seq 2
        await owner.flush()
        stored = [(e.seq, e.kind) for e in await log.since({created.id: 0})]
        assert stored == [(1, EventKind.TASK), (2, EventKind.TASK)]

        async def read_two() -> list[tuple[int, EventKind]]:
            got: list[tuple[int, EventKind]] = []
            async with contextlib.aclosing(lost.subscribe_batches(created.id)) as later:
                while len(got) < 2:
                    got += [(e.seq, e.kind) for e in await asyncio.wait_for(anext(later), 5) or ()]
            return got

        before = asyncio.ensure_future(read_two())  # before the lost worker stops (it does not know yet)
        await asyncio.sleep(0.05)
        await stopped(lost, first)
        assert await before == stored
        assert await read_two() == stored  # and after
        await eventually(lambda: len(seen) >= 2 or None)
        assert seen == stored  # the owner's 2, read by the poll: the refused 2 never reached it
        await asyncio.sleep(0.05)
        assert seen == stored
    finally:
        early.cancel()
        await asyncio.gather(early, return_exceptions=True)
        await lost.close()
        await owner.close()


async def test_a_stream_fed_by_the_poll_misses_nothing_when_its_process_takes_the_task_over(
        repo: Repository) -> None:
    """A stream opened in process A on a task process B runs is fed by A's poll; when A takes the
    task over (B died, or handed it back after a pool's node), A writes its events from then on and
    the poll no longer reads them. What B stored after the poll's last read reaches the stream
    first: every event once, in order, no gap."""
    created, _ = await repo.create_task("f", 1, TaskRequest("s", "e", "e"))
    first = await repo.claim_task(created.id, "w1", 0.01)
    assert first is not None
    b = EventHub(GroupCommitter(repo), TaskEventLog(repo.engine))
    a = EventHub(GroupCommitter(repo), TaskEventLog(repo.engine), poll_s=30)  # a poll that lags
    seen: list[int] = []

    async def follow() -> None:
        async for event in a.subscribe(created.id):
            seen.append(event.seq)  # type: ignore[union-attr]

    await b.task_started(first)  # seq 1
    await b.flush()
    reading = asyncio.ensure_future(follow())
    try:
        await eventually(lambda: seen == [1] or None)  # its history; the poll's next read is 30 s away
        await asyncio.sleep(0.05)
        b.node_said(created.id, EventKind.LOG, {"node_id": "s", "message": "two"})  # seq 2
        b.node_said(created.id, EventKind.LOG, {"node_id": "s", "message": "three"})  # seq 3
        await stopped(b, first)  # B dies (its events are stored): its lease runs out
        await asyncio.sleep(0.05)
        assert await repo.requeue_expired() == 1
        second = await repo.claim_task(created.id, "w2", 60)
        assert second is not None
        await a.task_started(second)  # A resumes it: seq 4
        await a.flush()
        await eventually(lambda: len(seen) >= 4 or None)
        assert seen == [1, 2, 3, 4]
    finally:
        reading.cancel()
        await asyncio.gather(reading, return_exceptions=True)
        await a.close()
        await b.close()


async def test_waits_after_many_ends_are_answered_and_the_hub_remembers_only_the_latest(
        repo: Repository, monkeypatch: pytest.MonkeyPatch) -> None:
    """The hub remembers the last RECENTLY_ENDED ends, so a ``?wait`` starting just after one is
    answered without a read, dropping the oldest as more end (its memory stays bounded however long
    the process runs); an end it forgot is still found, in the stored events."""
    monkeypatch.setattr("graph_runtime.events.RECENTLY_ENDED", 3)
    hub = EventHub(GroupCommitter(repo), TaskEventLog(repo.engine), poll_s=0.01)
    ended_ids = []
    try:
        for _ in range(5):
            created, _ = await repo.create_task("f", 1, TaskRequest("s", "e", "e"))
            claimed = await repo.claim_task(created.id, "w1", 60)
            assert claimed is not None
            await hub.task_started(claimed)
            await stopped(hub, dataclasses.replace(claimed, status=TaskStatus.SUCCEEDED, finished=datetime.now(UTC)))
            ended_ids.append(claimed.id)
        assert list(hub._recently_ended) == ended_ids[-3:]  # the bound, oldest dropped first
        for task_id in ended_ids:
            final = await asyncio.wait_for(hub.wait_ended(task_id, 5.0), 2.0)
            assert final is not None and final.final and final.seq == 2, task_id
    finally:
        await hub.close()
