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
from collections.abc import Callable, Collection, Sequence

from graph_runtime import errors
from graph_runtime.events import EventBatch
from graph_runtime.models import Lease, NodeRun
from graph_runtime.ports import TaskStore

log = logging.getLogger(__name__)

EVENTS_LINGER_S = 0.002
"""How long events wait for a node run to go with (a task's first event waits for its first
node's start; a node's tokens for each other) before they are committed by themselves."""

Stored = Callable[[Sequence[EventBatch], Collection[tuple[int, int]]], None]
"""Called once a commit stored event batches: the batches, and the (task, epoch) the fence kept out
of it (those batches were not stored: their writer lost its claim)."""


class GroupCommitter:
    """Coalesces ``save_node_runs`` calls into ``save_node_runs_many`` transactions, in order."""

    def __init__(self, store: TaskStore) -> None:
        self.store = store
        self._rows: list[tuple[int, NodeRun]] = []
        self._leases: dict[int, Lease] = {}
        self._waiters: list[asyncio.Future[None]] = []
        self._events: list[tuple[Sequence[EventBatch], Stored]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._linger: asyncio.TimerHandle | None = None

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

    def append_events(self, batches: Sequence[EventBatch], stored: Stored) -> None:
        """Store ``batches`` in the next commit (with the next node runs, or by themselves within
        EVENTS_LINGER_S), then call ``stored(batches, fenced)``. Nobody waits on them: a commit that fails
        for a busy or absent database keeps them, in order, for the next one (the stream is late,
        never wrong); :meth:`drain` waits until they are in."""
        self._events.append((batches, stored))
        if (self._flusher is None or self._flusher.done()) and self._linger is None:
            self._linger = asyncio.get_running_loop().call_later(EVENTS_LINGER_S, self._start)

    def take_events(self, task_id: int) -> list[EventBatch]:
        """Take back the event batches of ``task_id`` not in a commit yet: the caller stores them in
        a transaction of its own (a task's end), and their ``stored`` is not called."""
        taken: list[EventBatch] = []
        if self._events:
            self._events = _without(self._events, task_id, taken)
        return taken

    async def drain(self) -> None:
        """Wait until every write handed over so far is committed (or has failed)."""
        if self._events:
            self._start()
        while self._flusher is not None and not self._flusher.done():
            await asyncio.shield(self._flusher)

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
                batches = [batch for handed, _ in events for batch in handed]
                fenced = await self.store.save_node_runs_many(rows, leases, batches)
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
            for handed, stored in events:
                stored(handed, fenced.events)
            for (task_id, _), waiter in zip(rows, waiters, strict=True):
                if waiter.done():
                    continue
                if task_id in fenced.tasks:
                    waiter.set_exception(errors.LeaseLost(f"task {task_id} is no longer leased to this worker",
                                                          task_ids=frozenset({task_id})))
                else:
                    waiter.set_result(None)


def _without(handed: list[tuple[Sequence[EventBatch], Stored]], task_id: int,
             taken: list[EventBatch]) -> list[tuple[Sequence[EventBatch], Stored]]:
    """``handed`` without ``task_id``'s batches, which are added to ``taken`` in order."""
    kept: list[tuple[Sequence[EventBatch], Stored]] = []
    for batches, stored in handed:
        if any(batch.task_id == task_id for batch in batches):
            taken.extend(batch for batch in batches if batch.task_id == task_id)
            batches = [batch for batch in batches if batch.task_id != task_id]
        if batches:
            kept.append((batches, stored))
    return kept
