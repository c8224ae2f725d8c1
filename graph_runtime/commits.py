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

from graph_runtime import errors
from graph_runtime.events import TaskEvent
from graph_runtime.models import Lease, NodeRun
from graph_runtime.ports import TaskStore


class GroupCommitter:
    """Coalesces ``save_node_runs`` calls into ``save_node_runs_many`` transactions, in order."""

    def __init__(self, store: TaskStore) -> None:
        self.store = store
        self._rows: list[tuple[int, NodeRun]] = []
        self._leases: dict[int, Lease] = {}
        self._waiters: list[asyncio.Future[None]] = []
        self._events: list[TaskEvent] = []
        self._event_waiters: list[asyncio.Future[None]] = []
        self._flusher: asyncio.Task[None] | None = None

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
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="group-commit")
        return waiter

    def append_events(self, events: list[TaskEvent]) -> asyncio.Future[None]:
        """Store ``events`` in the next commit; the future says when (or raises what failed)."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._events.extend(events)
        self._event_waiters.append(waiter)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="group-commit")
        return waiter

    async def drain(self) -> None:
        """Wait until every write handed to ``save`` so far is committed (or has failed)."""
        while self._flusher is not None and not self._flusher.done():
            await asyncio.shield(self._flusher)

    async def _flush(self) -> None:
        while self._rows or self._events:
            await asyncio.sleep(0)  # let the successors woken this turn add their start rows
            rows, waiters, leases = self._rows, self._waiters, self._leases
            events, event_waiters = self._events, self._event_waiters
            self._rows, self._waiters, self._leases = [], [], {}
            self._events, self._event_waiters = [], []
            try:
                refused = await self.store.save_node_runs_many(rows, leases, events)
            except BaseException as exc:  # every waiter learns of it; the callers retry
                for waiter in [*waiters, *event_waiters]:
                    if not waiter.done():
                        waiter.set_exception(exc if isinstance(exc, Exception) else RuntimeError("commit interrupted"))
                if not isinstance(exc, Exception):
                    raise
            else:
                for waiter in event_waiters:
                    if not waiter.done():
                        waiter.set_result(None)
                for (task_id, _), waiter in zip(rows, waiters, strict=True):
                    if waiter.done():
                        continue
                    if task_id in refused:
                        waiter.set_exception(errors.LeaseLost(f"task {task_id} is no longer leased to this worker",
                                                              task_ids=frozenset({task_id})))
                    else:
                        waiter.set_result(None)
