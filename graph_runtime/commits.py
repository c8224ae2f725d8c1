"""Group commit: node-run writes from every running task share one transaction per loop turn.

A node's end and its successors' starts land in the same commit, and under load many tasks'
writes share one. Task events ride along (the events hub hands them over with
:meth:`GroupCommitter.append_events`): one writer per process, so they are stored in the order
they were numbered, in the node runs' transaction instead of one of their own. The guarantee is
unchanged: ``save`` returns only once its rows are committed, so a successor still starts only
after its inputs are durable.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from graph_runtime import errors
from graph_runtime.events import TaskEvent
from graph_runtime.models import Lease, NodeRun
from graph_runtime.ports import TaskStore

log = logging.getLogger(__name__)

EVENTS_LINGER_S = 0.002
"""How long events someone is reading wait for a node run to go with (a task's first event waits
for its first node's start; a node's tokens for each other) before they are committed by themselves."""

EVENTS_LATER_S = 0.1
"""How long events nobody is reading may wait. They are most of the bytes a task writes (a node
event is three times its node run's row, a task event the whole task), so they are gathered
instead of riding along with every node-run commit: a 10-node chain stores its 22 events in two
or three commits, most often in its end's, instead of in eleven."""

Stored = Callable[[Sequence[TaskEvent]], None]


class GroupCommitter:
    """Coalesces ``save_node_runs`` calls into ``save_node_runs_many`` transactions, in order."""

    def __init__(self, store: TaskStore) -> None:
        self.store = store
        self._rows: list[tuple[int, NodeRun]] = []
        self._leases: dict[int, Lease] = {}
        self._waiters: list[asyncio.Future[None]] = []
        self._events: list[tuple[Sequence[TaskEvent], Stored]] = []
        self._later: list[tuple[Sequence[TaskEvent], Stored]] = []  # nobody reads them yet
        self._flusher: asyncio.Task[None] | None = None
        self._linger: asyncio.TimerHandle | None = None
        self._later_timer: asyncio.TimerHandle | None = None

    async def save(self, task_id: int, run: NodeRun, lease: Lease | None = None) -> None:
        """Commit ``run`` of ``task_id`` (with whatever else is pending); return once durable.

        A cancelled caller cancels only its own wait: the commit runs in the flusher task.

        Raises:
            errors.LeaseLost: ``lease`` is no longer the task's: the row was not written.
        """
        await self.enqueue(task_id, run, lease)

    def enqueue(self, task_id: int, run: NodeRun, lease: Lease | None = None) -> asyncio.Future[None]:
        """Put ``run`` in the next commit without waiting for it: the future says how it went
        (``LeaseLost``, a store error). Rows are committed in the order they were handed over, so a
        row awaited with :meth:`save` is durable only once every row enqueued before it is."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # A snapshot: the caller may change the run again before the batch is written.
        self._rows.append((task_id, run.copy()))
        if lease is not None:
            self._leases[task_id] = lease
        self._waiters.append(waiter)
        self._start()
        return waiter

    def append_events(self, events: Sequence[TaskEvent], stored: Stored, *, read: bool = True) -> None:
        """Store ``events`` in a coming commit, then call ``stored(events)``: with the next node
        runs if someone ``read``s them, else within EVENTS_LATER_S. Nobody waits on them: a commit
        that fails for a busy or absent database keeps them, in order, for the next one (the
        stream is late, never wrong); :meth:`drain` waits until they are in."""
        loop = asyncio.get_running_loop()
        if not read:
            self._later.append((events, stored))
            if self._later_timer is None:
                self._later_timer = loop.call_later(EVENTS_LATER_S, self._store_later)
            return
        self._hurry_later()  # the earlier ones first: each task's events are handed out in order
        self._events.append((events, stored))
        if (self._flusher is None or self._flusher.done()) and self._linger is None:
            self._linger = loop.call_later(EVENTS_LINGER_S, self._start)

    def take_events(self, task_id: int) -> list[TaskEvent]:
        """Take back the events of ``task_id`` not in a commit yet: the caller stores them in a
        transaction of its own (a task's end), and their ``stored`` is not called. Other tasks'
        gathered events stay gathered."""
        taken: list[TaskEvent] = []
        self._events = _without(self._events, task_id, taken)
        self._later = _without(self._later, task_id, taken)  # a task's later events follow its others
        if not self._later and self._later_timer is not None:
            self._later_timer.cancel()
            self._later_timer = None
        return taken

    async def drain(self) -> None:
        """Wait until every write handed over so far is committed (or has failed)."""
        if self._events or self._later:
            self._store_later()
        while self._flusher is not None and not self._flusher.done():
            await asyncio.shield(self._flusher)

    def _hurry_later(self) -> None:
        if self._later:
            self._events.extend(self._later)
            self._later = []
        if self._later_timer is not None:
            self._later_timer.cancel()
            self._later_timer = None

    def _store_later(self) -> None:
        self._hurry_later()
        self._start()

    def _start(self) -> None:
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="group-commit")

    async def _flush(self) -> None:
        delay = 0.05
        while self._rows or self._events:
            await asyncio.sleep(0)  # let the successors woken this turn add their start rows
            rows, waiters, leases = self._rows, self._waiters, self._leases
            events = self._events
            self._rows, self._waiters, self._leases = [], [], {}
            self._events = []
            try:
                refused = await self.store.save_node_runs_many(rows, leases, [e for batch, _ in events for e in batch])
            except BaseException as exc:  # every waiter learns of it; the callers retry
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_exception(exc if isinstance(exc, Exception) else RuntimeError("commit interrupted"))
                if not isinstance(exc, Exception):
                    self._events[:0] = events
                    raise
                if isinstance(exc, errors.StoreUnavailable):
                    # The events wait, first in line, as the callers' rows do in their retries.
                    self._events[:0] = events
                    log.warning("events not stored yet, retrying in %.2fs: %s", delay, exc.message,
                                extra={"action": "events_retry"})
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 2.0)
                elif events and not isinstance(exc, errors.StoreClosed):
                    log.error("task events dropped: %s", exc, extra={"action": "events_dropped"})
                continue
            delay = 0.05
            for batch, stored in events:
                stored(batch)
            for (task_id, _), waiter in zip(rows, waiters, strict=True):
                if waiter.done():
                    continue
                if task_id in refused:
                    waiter.set_exception(errors.LeaseLost(f"task {task_id} is no longer leased to this worker",
                                                          task_ids=frozenset({task_id})))
                else:
                    waiter.set_result(None)


def _without(batches: list[tuple[Sequence[TaskEvent], Stored]], task_id: int,
             taken: list[TaskEvent]) -> list[tuple[Sequence[TaskEvent], Stored]]:
    """``batches`` without ``task_id``'s events, which are added to ``taken`` in order."""
    kept: list[tuple[Sequence[TaskEvent], Stored]] = []
    for batch, stored in batches:
        if any(event.task_id == task_id for event in batch):
            taken.extend(event for event in batch if event.task_id == task_id)
            batch = [event for event in batch if event.task_id != task_id]
        if batch:
            kept.append((batch, stored))
    return kept
