"""The task-events hub (SPEC §11): every status change of a task and its nodes, and what nodes say
while they run (``ctx.progress``, ``ctx.log``, an LLM's tokens), as numbered, stored events.

One hub per process. The executor reports to it; it numbers each task's events (``seq`` 1, 2, …:
one writer per task at a time, the worker holding its lease), stores them in batches through an
:class:`EventWriter` (the group committer), and only then hands them to this process's
subscribers, so an event anyone saw is stored and a reconnect with ``Last-Event-ID`` resumes with
no gap and no duplicate. An event is made as the entry the log stores, ``(seq, kind, data)``;
it becomes a :class:`TaskEvent` only when someone here reads it.
Subscribers of tasks run by another process (an API process with ``--workers 0``) are fed by
one poll of the log per process for all of them, never a query per subscriber.

Events nobody here reads wait with their task's stream in this hub, stored a moment later
(:data:`EVENTS_LATER_S`) or, most often, in the transaction of the task's end: they are most of
the bytes a task writes, and handing each to the group commit with its node run made a short
chain a third slower. A stream opened here stores what is pending first and its task's events go
out at once from then on. What that costs: a stream read through another process sees them up to
that moment later, and a worker killed outright loses that last moment of history (never an
event anyone was handed).

What reads from it: the event stream (``GET /task/{id}/events``), ``?wait`` (a task's end),
the CLI's live table, metrics and traces (``watch``: every node change, synchronously, in the
node's own asyncio task), and whatever reacts to a task's end (callbacks, flow triggers).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections import OrderedDict, defaultdict
from collections.abc import AsyncGenerator, Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from graph_runtime import errors
from graph_runtime.models import NodeRun, Task
from graph_runtime.ticker import Ticker

log = logging.getLogger(__name__)


class EventKind(enum.StrEnum):
    TASK = "task"  # data: the task (a Task; the API shows it as GET /task/{id} does)
    NODE = "node"  # data: the node run (a NodeRun; the API shows it as the task lists it, with its node_id)
    PROGRESS = "progress"  # data: {node_id, fraction, message}
    LOG = "log"  # data: {node_id, level, message}
    TOKEN = "token"  # data: {node_id, text}


EventData = Any
"""What an event says, as it is stored: a task's or node run's snapshot in the log's encoding
(:meth:`EventLog.task_data`, :meth:`EventLog.node_data`: an array by position), what a node said
as its mapping. Made once, when it happened, and never decoded here: most events are only ever
stored, and whoever shows one decodes it (the API, with the log's ``decode``). A copy of the typed
run then an encoding of that copy at the commit was a third of what the hub cost a chain nobody
watched."""

# Read once here: a member read through its class (``EventKind.NODE``) costs ~55 ns on Python 3.11
# (the enum's metaclass defeats the attribute cache), a module global ~6; a chain reports 22 events.
_TASK, _NODE = EventKind.TASK, EventKind.NODE

Entry = tuple[int, "EventKind", EventData]
"""One event in a batch: its ``seq``, kind and data, which is also how the log stores it."""


# Not frozen: a frozen dataclass sets each field through object.__setattr__.
@dataclass(slots=True)
class TaskEvent:
    """One event of one task, as subscribers get it. ``seq`` is its id on the stream: 1, 2, … per
    task, no gaps.

    It has no time of its own: nothing shows one (SPEC §11's events are their data, and a node's
    data carries its run's ``started`` and ``finished``), and it cost a clock read and 30 stored
    bytes an event, a seventh of a chain's batch."""

    task_id: int
    seq: int
    kind: EventKind
    data: EventData
    final: bool = False  # the task event of its end: the stream closes after it
    # Readers' cache of this event's encodings (the stream's frame): one live event object reaches
    # every subscriber of this process, so it is encoded once, not once per subscriber. Made by
    # the first reader (most events have none).
    encoded: dict[str, bytes] | None = field(default=None, compare=False, repr=False)
    # A final event made here: the ended task as the executor left it, node outputs and all, so a
    # ``?wait`` answers without reading it back (``data`` has no outputs). Never stored.
    task: Task | None = field(default=None, compare=False, repr=False)


@dataclass(slots=True)
class EventBatch:
    """Consecutive events of one task made by one writer, as they are handed to the store: one row
    of the log (a task's events nobody read go in one, with its end). Events exist as
    :class:`TaskEvent` objects only once someone here subscribes to them: a chain nobody watches
    makes twenty-two entries and no event object."""

    task_id: int
    # The fence: stored only while the task's claim count is still this (the writer's lease epoch),
    # so a worker that lost its lease records no event. None: not fenced (a task no worker held).
    epoch: int | None
    entries: list[Entry]  # their numbers consecutive
    final: bool = False  # the last entry is the task's final event
    task: Task | None = None  # with ``final``, made here: the ended task (TaskEvent.task)

    @property
    def first(self) -> int:
        return self.entries[0][0]

    @property
    def last(self) -> int:
        return self.entries[-1][0]

    def events(self) -> list[TaskEvent]:
        task_id, last = self.task_id, self.last if self.final else 0
        return [TaskEvent(task_id, seq, kind, data, seq == last, task=self.task if seq == last else None)
                for seq, kind, data in self.entries]


class EventWriter(Protocol):
    """Stores event batches, in the order given (the process's group committer: with the node runs
    of the same loop turn, in their transaction). A batch whose ``epoch`` is no longer its task's
    claim count, or whose first number is taken, is dropped."""

    def append_events(self, batches: Sequence[EventBatch],
                      stored: Callable[[Sequence[EventBatch], Collection[tuple[int, int]]], None]) -> None:
        """Store ``batches`` in a commit soon (retrying while the database is away), then call
        ``stored(batches, fenced)``: ``fenced``, the (task, epoch) of those the store refused."""

    def drain(self) -> Awaitable[None]:
        """Wait until everything handed over so far is stored."""

    def take_events(self, task_id: int) -> list[EventBatch]:
        """Take back ``task_id``'s batches not being stored yet (their ``stored`` is not called)."""


class EventLog(Protocol):
    """Where events are read from, and how their data is stored (``storage`` implements it). A busy
    or unreachable database raises ``StoreUnavailable``."""

    async def since(self, task_ids: Mapping[int, int]) -> list[TaskEvent]:
        """The events of each task after the ``seq`` given for it, in (task, seq) order."""

    async def last_seq(self, task_id: int) -> int:
        """The highest ``seq`` stored for ``task_id``; 0 when it has none."""

    def node_data(self, run: NodeRun) -> EventData:
        """A node event's data: ``run`` as it is now, as the log stores it (a snapshot: the
        executor goes on changing the run)."""

    def task_data(self, task: Task, told: Mapping[str, EventData] | None = None) -> EventData:
        """A task event's data: ``task`` as it is now, as the log stores it. ``told``: the data of
        each node's last node event, by node id; a run its node's says as it is now is that same
        object (the log stores it once, and no second snapshot of the run is made)."""


class EndNotices(Protocol):
    """Tells this process at once that a task ended anywhere (PostgreSQL's LISTEN/NOTIFY): the
    poll for tasks run elsewhere then reads their end now, not at its next turn."""

    async def start(self, on_end: Callable[[int | None], None]) -> None:
        """Start listening; ``on_end(task_id)`` on this loop for each end, ``on_end(None)``: look now."""

    async def stop(self) -> None:
        """Stop listening."""

    async def watch(self, task_ids: Sequence[int]) -> None:
        """Ask for a notice when these tasks end (only asked-for ends are announced). Never raises:
        the poll reads the ends anyway."""


NodeWatcher = Callable[[Task, NodeRun], None]
StopWatcher = Callable[[Task], None]

RECENTLY_ENDED = 4096
"""How many tasks' final events a hub keeps at hand for ``wait_ended``."""

POLL_S = 0.05
"""How often the events of tasks another process runs are looked for, while someone waits for them."""

FANOUT_HOLD = 64
"""From this many streams reached by one delivery, their writes are held for :data:`HOLD_S` so that
what follows goes in the same write: each write is a socket ``send``, and with a thousand streams
the kernel's sends were 80% of the server's streaming time. Fewer streams are written at once."""

HOLD_S = 0.01
"""How long a held write waits: a node's end and its successor's start (two commits, a few ms
apart) reach each stream in one write."""

SHARED_HISTORY = 10_000
"""How many of a task's stored events its process keeps for the streams opening on it (see
``_Stream.told``); a longer history (an LLM's tokens) is read from the log by each."""

EVENTS_LATER_S = 0.1
"""How long events nobody reads may wait with their task before they go to the group commit: at
least one tick of this and at most two (a :class:`~graph_runtime.ticker.Ticker`'s, not a timer in
the loop). A 10-node chain's 22 events are most often stored with its end, in one commit, instead
of in eleven; a long task's every tenth to fifth of a second."""


@dataclass(slots=True)  # slots: made per task, its fields read on every event
class _Stream:
    """Where one task's events stand in this process."""

    next_seq: int = 0  # 0: not known yet (read from the log before this process writes)
    delivered: int = 0  # the last seq handed to subscribers
    subscribers: set[asyncio.Queue[TaskEvent | None]] = field(default_factory=set)
    writing: bool = False  # this process's executor runs the task: its events come straight from emit (next_seq is set)
    epoch: int | None = None  # the lease epoch of this process's claim, fencing its events
    unstored: int = 0  # events made, not stored yet (``pending`` and those handed to the writer)
    pending: list[Entry] = field(default_factory=list)  # made while nobody read: not handed over yet
    readers: int = 0  # streams reading its events here (not ?wait: that waits for the end only)
    since: int = 0  # the hub's tick count when its oldest pending event was made
    ended: bool = False  # its final event is stored (with the task's end)
    asked: bool = False  # a notice of its end elsewhere was asked for (EndNotices.watch), or is due anyway
    # Its stored events from 1 on (``told[i].seq == i + 1``), as read or as stored here, kept while
    # streams read them (up to SHARED_HISTORY): the streams that open on a task share one read and
    # one rendering of its history, each reading only what was stored since (a thousand opening on a
    # 315-node task each read and rendered it all, and every event already flowing waited behind
    # them: p50 70 ms while they opened, 20 ms once open). Never an event the store refused (a
    # worker that lost its task): the store says which, and those are handed to nobody. None: not kept.
    told: list[TaskEvent] | None = None
    # The data of each node's last event this process made, by node id, while it writes the task:
    # its final task event lists the runs, and most are as their last event said (task_data).
    runs: dict[str, EventData] = field(default_factory=dict)


class _Writer:
    """A subscriber that writes events as they are delivered (``EventHub.subscribe_batches``'s
    ``write``): it stands where a queue would, so delivery calls ``put_nowait``. What one commit
    delivers is written in one write, after it (:meth:`EventHub._write_touched`), or a moment
    later with what follows when a delivery reaches many streams (:data:`FANOUT_HOLD`)."""

    def __init__(self, write: Callable[[Sequence[TaskEvent]], bool], last: int, touched: list[_Writer]) -> None:
        self._write = write
        self._last = last
        self._batch: list[TaskEvent] = []
        self._touched = touched  # the hub's writers with a batch to write
        self.done = asyncio.Event()

    def put_nowait(self, event: TaskEvent | None) -> None:
        if self._take(event) and len(self._batch) == 1:
            self._touched.append(self)

    def write_now(self, events: Iterable[TaskEvent | None]) -> None:
        """Writes what a queue got before this writer stood in for it, in one write, without
        joining the hub's list of writers to write (where it would count toward FANOUT_HOLD)."""
        for event in events:
            self._take(event)
        self.flush()

    def _take(self, event: TaskEvent | None) -> bool:
        """Adds the event to the batch; False if it was not added."""
        if self.done.is_set():
            return False
        if event is None:  # the hub is closing
            self.flush()
            self.done.set()
            return False
        if event.seq <= self._last:
            return False
        self._last = event.seq
        self._batch.append(event)
        return True

    def flush(self) -> None:
        batch, self._batch = self._batch, []
        if not batch or self.done.is_set():
            return
        try:
            taken = self._write(batch)
        except Exception:  # one reader's broken connection must not stop delivery to the others
            log.exception("an event stream's write failed", extra={"action": "events_write_failed"})
            taken = False
        if not taken or batch[-1].final:
            self.done.set()  # the writer could not take it, or the stream is complete


class EventHub:
    """Numbers, stores and fans out task events (see the module's docstring).

    Args:
        writer: stores them (the process's group committer).
        log: reads them back.
        endings: task ends anywhere, at once (PostgreSQL); started with the first poll, so a
            process that never waits for another's tasks never listens. None: the poll alone.
        later_s: how long events nobody here reads wait, one to two of these (EVENTS_LATER_S).
    """

    def __init__(self, writer: EventWriter, log: EventLog, *, poll_s: float = POLL_S,
                 endings: EndNotices | None = None, later_s: float = EVENTS_LATER_S) -> None:
        self._writer = writer
        self._log = log
        self._node_data, self._task_data = log.node_data, log.task_data
        self._poll_s = poll_s
        self._later_s = later_s
        self._endings = endings
        self._listening: asyncio.Task[None] | None = None
        self._woken = asyncio.Event()  # an end notice for a task polled here: poll now
        self._streams: dict[int, _Stream] = defaultdict(_Stream)
        self._poller: asyncio.Task[None] | None = None
        self._node_watchers: list[NodeWatcher] = []
        self._stop_watchers: list[StopWatcher] = []
        # Final events delivered here lately: a ?wait that starts just after a task ended finds it.
        # Oldest first, an OrderedDict: a plain dict's oldest key, taken with next(iter(...)) once it is
        # full, is found past every key deleted before it (1.5 µs a task's end in a long-running
        # process, against 0.18 for popitem).
        self._recently_ended: OrderedDict[int, int] = OrderedDict()  # task id: its final event's seq
        # Hands over the events pending a whole tick (EVENTS_LATER_S), while some are; made on first use.
        self._ticker: Ticker | None = None
        self._ticks = 0
        self._waiting = 0  # streams with pending events: the ticker ticks only while there are some
        self._touched: list[_Writer] = []  # stream writers with events delivered, not written yet
        self._hold: asyncio.TimerHandle | None = None  # writes held a moment (FANOUT_HOLD)
        self._closed = False

    # -- what the executor reports ---------------------------------------------------------

    async def task_started(self, task: Task) -> None:
        """A worker of this process runs ``task`` from now on (a first claim, a resume, a hand-over)."""
        stream = self._streams[task.id]
        if stream.pending:  # made under an earlier claim: stored under its epoch
            self._hand_over(task.id, stream)
        if stream.subscribers and not stream.writing:
            # Its streams here were fed by the poll, which stops looking at a task this process
            # writes: what another process stored since the poll last read is handed out first (a
            # task handed back to this process after a pool's node, resumed after a worker died).
            self._deliver(await self._log.since({task.id: stream.delivered}))
            self._write_touched()
            stream = self._streams[task.id]
        if not stream.next_seq:
            # A first claim writes the task's first events; anything else continues after the stored ones.
            # (Before it is writing: a late report of the claim before must not be numbered meanwhile.)
            next_seq = 1 + (await self._log.last_seq(task.id) if task.claims > 1 else 0)
            stream = self._streams[task.id]  # the same unless it was forgotten meanwhile
            stream.next_seq = stream.next_seq or next_seq
        stream.writing = True
        stream.epoch = task.lease.epoch if task.lease is not None else None
        self._emit(task.id, _TASK, self._task_data(task), final=task.status.ended)

    def node_changed(self, task: Task, run: NodeRun) -> None:
        """A node's status changed (called in the node's asyncio task: watchers see it there)."""
        for watcher in self._node_watchers:
            watcher(task, run)
        self._emit(task.id, _NODE, self._node_data(run), False, run.node_id)  # positional: a cheaper call

    def node_said(self, task_id: int, kind: EventKind, data: Mapping[str, Any]) -> None:
        """A running node's ``progress``, ``log`` or ``token``."""
        self._emit(task_id, kind, data)

    def unstored(self, task_id: int) -> list[EventBatch]:
        """The task's events not being stored yet (its pending ones, and those taken back from the
        writer): they go in the transaction of its end, with :meth:`final_event`'s."""
        stream = self._streams.get(task_id)
        if stream is None:
            return self._writer.take_events(task_id)
        # Those handed over are older than those pending (handing over takes them all).
        taken = self._writer.take_events(task_id) if stream.unstored > len(stream.pending) else []
        if stream.pending:
            taken.append(EventBatch(task_id, stream.epoch, self._take_pending(stream)))
        return taken

    def final_event(self, ended: Task) -> EventBatch | None:
        """The final event of ``ended`` (this process runs it, and it is in its end state), to be
        stored in the same transaction as the end itself (``TaskStore.finish_task``); once that
        committed, :meth:`end_stored`. Its number is taken only then: asked again (the end
        changed before it could be written), the same number comes back."""
        stream = self._streams.get(ended.id)
        if stream is None or not stream.writing or stream.ended:
            return None
        return EventBatch(ended.id, stream.epoch, [(stream.next_seq, _TASK, self._task_data(ended, stream.runs))],
                          final=True, task=ended)

    def end_stored(self, batches: Sequence[EventBatch]) -> None:
        """``batches`` (:meth:`unstored`'s, then :meth:`final_event`'s) are committed with the
        task's end: hand them out."""
        final = batches[-1] if batches else None
        if final is not None and final.final and (stream := self._streams.get(final.task_id)) is not None:
            # Counted now, as _stored uncounts it: made by final_event, it never was, and a node's
            # late report still waiting to be stored must keep the task's count above 0.
            stream.unstored += 1
            if stream.next_seq == final.last:
                stream.next_seq += 1
                stream.ended = True
        self._stored(batches, ())

    def task_stopped(self, task: Task) -> Awaitable[None] | None:
        """This process stops running ``task``: it ended (its final event), or was handed over,
        released or lost. Returns what to await until its events are stored (whoever runs it next
        continues after them), or None when they are (most often: stored with its end), so the
        caller needs no shielded task and no loop turn for it."""
        stream = self._streams.get(task.id)
        if stream is None or not stream.writing:
            return None
        if task.status.ended and not stream.ended:
            self._emit(task.id, _TASK, self._task_data(task, stream.runs), final=True)
        if stream.unstored:
            return self._stopped_once_stored(task, stream)
        self._stopped(task, stream)
        return None

    async def _stopped_once_stored(self, task: Task, stream: _Stream) -> None:
        await self.flush()
        self._stopped(task, stream)

    def _stopped(self, task: Task, stream: _Stream) -> None:
        stream.writing = stream.ended = False
        stream.next_seq = 0
        stream.runs = {}
        for watcher in self._stop_watchers:
            watcher(task)
        self._forget_if_idle(task.id)

    async def ended_elsewhere(self, task: Task) -> None:
        """A task that no worker held ended here (cancelled while queued or waiting for a pool):
        its final event, numbered after whatever is stored."""
        stream = self._streams[task.id]
        if not stream.next_seq:
            next_seq = 1 + await self._log.last_seq(task.id)
            stream = self._streams[task.id]  # the same unless it was forgotten meanwhile
            stream.next_seq = stream.next_seq or next_seq
        stream.writing, stream.epoch = True, None
        if (storing := self.task_stopped(task)) is not None:
            await storing

    # -- what readers use ------------------------------------------------------------------

    def watch_nodes(self, watcher: NodeWatcher) -> Callable[[], None]:
        """Call ``watcher(task, run)`` on each node change of tasks this process runs (metrics,
        traces, the CLI's table), in the node's asyncio task. Returns the undo."""
        self._node_watchers.append(watcher)
        return lambda: self._node_watchers.remove(watcher)

    def watch_stops(self, watcher: StopWatcher) -> Callable[[], None]:
        """Call ``watcher(task)`` when a task this process ran stops here: it ended (its status
        says so: callbacks, flow triggers, metrics), or was handed over, released or lost, to
        resume elsewhere. Called once its events are stored. Returns the undo."""
        self._stop_watchers.append(watcher)
        return lambda: self._stop_watchers.remove(watcher)

    async def history(self, task_id: int, after: int = 0) -> list[TaskEvent]:
        """The task's stored events after ``seq`` ``after`` (all of an ended task's)."""
        return await self._log.since({task_id: after})

    async def subscribe(self, task_id: int, after: int = 0, *,
                        idle_s: float | None = None) -> AsyncGenerator[TaskEvent | None, None]:
        """The task's events after ``seq`` ``after``, one by one (see :meth:`subscribe_batches`)."""
        async with contextlib.aclosing(self.subscribe_batches(task_id, after, idle_s=idle_s)) as batches:
            async for batch in batches:
                if batch is None:
                    yield None
                    continue
                for event in batch:
                    yield event

    async def subscribe_batches(self, task_id: int, after: int = 0, *, idle_s: float | None = None,
                                write: Callable[[Sequence[TaskEvent]], bool] | None = None,
                                ) -> AsyncGenerator[list[TaskEvent] | None, None]:
        """The task's events after ``seq`` ``after``: first those stored, then as they come, each
        batch what arrived since the subscriber last looked (one write for a stream that fell
        behind, not one per event: a thousand streams share one loop); ends after the final one.
        With ``idle_s``, None whenever nothing came for that long (a stream's keep-alive: one
        timer per subscriber, no task per event).

        With ``write``, live events are not yielded: what each commit (or poll) delivers is handed
        to ``write`` right after it, in the delivering call (no queue, no coroutine woken per event
        per subscriber: the cost of a thousand streams); ``write`` answers False when it cannot
        take them (its reader fell too far behind, its connection closed), and the subscription
        ends there."""
        stream = self._streams[task_id]
        queue: asyncio.Queue[TaskEvent | None] = asyncio.Queue()
        stream.subscribers.add(queue)
        stream.readers += 1
        try:
            if stream.unstored:
                await self.flush()  # what this process has not stored yet is stored now, and read below
            last = after
            # The history: what was handed out before this subscription is yielded from the read;
            # anything newer goes out through _deliver, to this queue and every other subscriber's,
            # so the poll's cursor moves on and is never behind what someone has read.
            # Read from the older of the two, so no event between them is skipped for the others.
            handed_out = stream.delivered
            history = await self._history(stream, task_id, min(after, handed_out))
            told = [event for event in history if after < event.seq <= handed_out]
            # A stream may stay open for hours, and its history can be a task of a thousand nodes: it
            # keeps none of it once written (1,000 streams on a 315-node task held 325,000 node runs,
            # and the server's full collections scanned them all: 120 ms pauses).
            del history
            if told:
                yield told
                last = told[-1].seq
                if told[-1].final:
                    return
            del told
            if self._closed:
                return
            self._ensure_poller()
            if write is not None:
                direct = _Writer(write, last, self._touched)
                # No await from here to the switch: what the queue got meanwhile goes first, in order.
                direct.write_now(queue.get_nowait() for _ in range(queue.qsize()))
                stream.subscribers.discard(queue)
                stream.subscribers.add(direct)  # type: ignore[arg-type]
                try:
                    while not direct.done.is_set():
                        try:
                            async with asyncio.timeout(idle_s):
                                await direct.done.wait()
                        except TimeoutError:
                            yield None
                finally:
                    stream.subscribers.discard(direct)  # type: ignore[arg-type]
                return
            while True:
                try:
                    async with asyncio.timeout(idle_s):
                        live: TaskEvent | None = await queue.get()
                except TimeoutError:
                    yield None
                    continue
                batch: list[TaskEvent] = []
                while live is not None:
                    if live.seq > last:  # else read from the log already
                        batch.append(live)
                        last = live.seq
                        if live.final:
                            break
                    if queue.empty():
                        break
                    live = queue.get_nowait()
                if batch:
                    yield batch
                if live is None or (batch and batch[-1].final):
                    return  # the final event, or the hub is closing
        finally:
            stream.subscribers.discard(queue)
            stream.readers -= 1
            if not stream.readers:
                stream.told = None
            self._forget_if_idle(task_id)

    async def _history(self, stream: _Stream, task_id: int, after: int) -> list[TaskEvent]:
        """The task's stored events after ``after`` (what it holds beyond what was handed out is
        delivered now). Kept in ``stream.told`` for the streams that open next, up to SHARED_HISTORY
        events: a stream opening beside others reads only what was stored since they did."""
        told = stream.told
        if told is not None and after <= len(told) >= stream.delivered:
            return told[after:]  # what was handed out is all here, and anything newer is on its way
        if told is not None and after <= len(told):  # and what was stored since, read now
            known = len(told)
            newer = await self._log.since({task_id: known})
            history = told[after:known] + newer
            # Kept longer unless another opening extended it meanwhile (only ever appended to).
            if stream.told is told and len(told) == known and (not newer or newer[0].seq == known + 1):
                told += newer
                if len(told) > SHARED_HISTORY:
                    stream.told = None
        else:
            history = await self._log.since({task_id: after})
            if (after == 0 and stream.told is None and stream.readers and history
                    and history[-1].seq == len(history) <= SHARED_HISTORY):
                stream.told = list(history)
        self._deliver(history)
        self._write_touched()
        return history

    async def wait_ended(self, task_id: int, timeout_s: float, *, announced: bool = False) -> TaskEvent | None:
        """Wait up to ``timeout_s`` for ``task_id`` to end (``?wait``): its final event (whose data
        is the ended task), or None. Nothing is read for it: a task run here ends through this
        hub, one run elsewhere through the shared poll; a task that ended here a moment ago is
        remembered. The caller has seen the task not ended before calling. ``announced``: the
        task was created naming this process its watcher (its end elsewhere is announced
        already: no need to ask)."""
        if (seq := self._recently_ended.get(task_id)) is not None:
            return TaskEvent(task_id, seq, _TASK, None, True)
        stream = self._streams[task_id]
        stream.asked = stream.asked or announced
        queue: asyncio.Queue[TaskEvent | None] = asyncio.Queue()
        stream.subscribers.add(queue)
        try:
            if (seq := self._recently_ended.get(task_id)) is not None:  # ended while the stream was being set up
                return TaskEvent(task_id, seq, _TASK, None, True)
            if not self._closed:
                self._ensure_poller()
            async with asyncio.timeout(timeout_s):
                while (event := await queue.get()) is not None:
                    if event.final:
                        return event
        except TimeoutError:
            pass
        finally:
            stream.subscribers.discard(queue)
            self._forget_if_idle(task_id)
        return None

    async def flush(self) -> None:
        """Wait until every event emitted so far is stored and delivered."""
        self._hand_over_all()
        await self._writer.drain()

    def interrupt(self) -> None:
        """Shutting down: every subscription ends now (a ``?wait`` answers with the task as it is,
        a stream closes and its client reconnects elsewhere with ``Last-Event-ID``); events are
        still stored."""
        self._closed = True
        if self._ticker is not None:
            self._ticker.stop()
        if self._poller is not None:
            self._poller.cancel()
        for stream in self._streams.values():
            for queue in stream.subscribers:
                queue.put_nowait(None)

    async def close(self) -> None:
        """Store what is pending and end every subscription."""
        self.interrupt()
        with contextlib.suppress(errors.StoreUnavailable, errors.StoreClosed):
            await self.flush()
        if self._poller is not None:
            await asyncio.gather(self._poller, return_exceptions=True)
        if self._listening is not None:
            self._listening.cancel()
            await asyncio.gather(self._listening, return_exceptions=True)
        if self._endings is not None:
            await self._endings.stop()

    # -- inside ----------------------------------------------------------------------------

    def _emit(self, task_id: int, kind: EventKind, data: EventData, final: bool = False,
              node_id: str | None = None) -> None:
        """Numbers and keeps an event of this process's task (``node_id``: a node's event)."""
        stream = self._streams.get(task_id)
        if stream is None or not stream.writing:
            return  # not this process's task (a late node report after a hand-over or a lost lease)
        if node_id is not None:
            stream.runs[node_id] = data
        seq = stream.next_seq
        stream.next_seq = seq + 1
        stream.unstored += 1
        if not stream.pending:
            self._waiting += 1
            stream.since = self._ticks
        stream.pending.append((seq, kind, data))
        if stream.readers or final:  # into the next group commit, with the node runs of the same loop turn
            self._hand_over(task_id, stream, final=final)
        elif self._ticker is None or self._ticker.asleep:  # (after _waiting went up: see Ticker)
            self._tick_on()

    def _tick_on(self) -> None:
        if self._closed:
            return
        if self._ticker is None:
            self._ticker = Ticker(asyncio.get_running_loop(), self._hand_over_due, lambda: self._waiting > 0,
                                  self._later_s)
        self._ticker.wake()

    def _hand_over_due(self) -> None:
        """A tick: what has been pending since before the last one goes to the group commit."""
        self._ticks += 1
        for task_id, stream in self._streams.items():
            if stream.pending and stream.since < self._ticks - 1:
                self._hand_over(task_id, stream)

    def _hand_over(self, task_id: int, stream: _Stream, *, final: bool = False) -> None:
        self._writer.append_events((EventBatch(task_id, stream.epoch, self._take_pending(stream), final),),
                                   self._stored)

    def _take_pending(self, stream: _Stream) -> list[Entry]:
        """The stream's pending events, taken."""
        taken, stream.pending = stream.pending, []
        self._waiting -= 1
        return taken

    def _hand_over_all(self) -> None:
        for task_id, stream in self._streams.items():
            if stream.pending:
                self._hand_over(task_id, stream)

    def _stored(self, batches: Sequence[EventBatch], fenced: Collection[tuple[int, int]]) -> None:
        for batch in batches:
            stream = self._streams.get(batch.task_id)
            if stream is not None:
                stream.unstored = max(0, stream.unstored - len(batch.entries))
            if fenced and (batch.task_id, batch.epoch) in fenced:
                # Refused: made under a claim that is no longer the task's. Nobody here is handed
                # them (the next owner's events take their numbers; the poll reads on from what
                # was delivered), so what streams here get, and the shared history, is the log's.
                continue
            if stream is not None and (stream.subscribers or stream.told is not None):
                self._deliver(batch.events())
            elif stream is not None and batch.last > stream.delivered:  # nobody here reads: where they stand
                stream.delivered = batch.last
                if batch.final:
                    self._remember_end(batch.task_id, batch.last)
            elif stream is None and batch.final:
                self._remember_end(batch.task_id, batch.last)
        if self._touched:
            self._write_touched()

    def _write_held(self) -> None:
        self._hold = None
        self._write_touched(now=True)

    def _write_touched(self, *, now: bool = False) -> None:
        """Write what the deliveries just made put in stream writers: one write per stream, at
        once, or within HOLD_S when they reach FANOUT_HOLD streams or more."""
        if not now and len(self._touched) >= FANOUT_HOLD:
            if self._hold is None:
                self._hold = asyncio.get_running_loop().call_later(HOLD_S, self._write_held)
            return
        if self._hold is not None:
            self._hold.cancel()
            self._hold = None
        if self._touched:
            touched = self._touched.copy()
            self._touched.clear()  # in place: every writer holds this list
            for writer in touched:
                writer.flush()

    def _remember_end(self, task_id: int, seq: int) -> None:
        """Keeps that the task ended with event ``seq``, for a ``?wait`` that starts just after (not its data)."""
        self._recently_ended[task_id] = seq
        if len(self._recently_ended) > RECENTLY_ENDED:
            self._recently_ended.popitem(last=False)  # the oldest

    def _deliver(self, events: Iterable[TaskEvent]) -> None:
        """Hands ``events`` (in order per task, stored) to their tasks' subscribers here, those not
        handed out yet."""
        task_id, stream = None, None  # the stream looked up last: a commit's events are mostly one task's
        for event in events:
            if event.final:
                self._remember_end(event.task_id, event.seq)
            if event.task_id != task_id:
                task_id, stream = event.task_id, self._streams.get(event.task_id)
            if stream is None or event.seq <= stream.delivered:
                continue
            stream.delivered = event.seq
            told = stream.told
            if told is not None and event.seq > len(told):
                if event.seq == len(told) + 1 and event.seq <= SHARED_HISTORY:
                    told.append(event)
                else:  # a gap (it cannot be filled here), or long enough: read by the next stream
                    stream.told = None
            for queue in stream.subscribers:
                queue.put_nowait(event)

    def _forget_if_idle(self, task_id: int) -> None:
        stream = self._streams.get(task_id)
        if stream is not None and not stream.subscribers and not stream.writing:
            del self._streams[task_id]

    def _ensure_poller(self) -> None:
        if self._poller is None or self._poller.done():
            self._poller = asyncio.create_task(self._poll(), name="events-poll")
        if self._endings is not None and self._listening is None:
            self._listening = asyncio.create_task(self._endings.start(self._ended), name="events-endings")

    def _ended(self, task_id: int | None) -> None:
        """An end notice: poll now if the task is one this process waits for and another runs."""
        stream = self._streams.get(task_id) if task_id is not None else None
        if task_id is None or (stream is not None and stream.subscribers and not stream.writing):
            self._woken.set()

    async def _poll(self) -> None:
        """Feed subscribers of tasks another process writes: one read for all of them per turn."""
        while not self._closed:
            # Cleared at each turn, before anything is awaited: a notice from here on is for what
            # this turn's read may miss, and the wait below always suspends unless one came.
            self._woken.clear()
            watched = {task_id: stream.delivered for task_id, stream in list(self._streams.items())
                       if stream.subscribers and not stream.writing}
            if not watched:
                if not any(stream.subscribers for stream in self._streams.values()):
                    return  # nobody waits: the next subscriber starts it again
            else:
                # Before the read: an end committed after the ask is announced, one before it is read here.
                asking = [task_id for task_id in watched if not self._streams[task_id].asked]
                if self._endings is not None and asking:
                    for task_id in asking:
                        self._streams[task_id].asked = True
                    await self._endings.watch(asking)
                try:
                    self._deliver(await self._log.since(watched))
                    self._write_touched()
                except (errors.StoreUnavailable, errors.StoreClosed) as exc:
                    log.debug("events poll failed: %s", exc)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll_s):
                    await self._woken.wait()
