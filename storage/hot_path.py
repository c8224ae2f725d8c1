"""The hot path: the store operations a worker makes per task and per node, one implementation per
engine, chosen once when a repository is built.

SQLite runs them on stdlib ``sqlite3`` inline on the event loop (:class:`storage.sqlite_hot_path.SqliteHotPath`),
PostgreSQL on asyncpg directly (:class:`storage.pg_hot_path.PgHotPath`): no SQLAlchemy statement
machinery between a node's end and its commit. Both share the row codec (:mod:`storage.rows`). The
API's colder queries (history, keys, secrets, flow listings) stay SQLAlchemy Core, the same on both.

Every operation is one transaction (or one autocommitted statement), raises
``graph_runtime.errors.StoreUnavailable`` when the database is busy or unreachable, and the
graph-runtime error that fits (``TaskNotFound``, ``LeaseLost``, ``RevisionNotFound``...) otherwise.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any, Protocol, TypeVar

from graph_runtime import errors
from graph_runtime.events import EventBatch, TaskEvent
from graph_runtime.models import Fenced, Lease, NodeRun, Task, TaskOutcome, TaskStatus
from nodes import codec
from storage.rows import RowCodec, json_text
from storage.sqlite_inline import THREAD_ABOVE_BYTES

T = TypeVar("T")

CacheRow = tuple[str, str, str, float, int, datetime]
"""A cache entry to store: key, node type, output as JSON text, cost, size in bytes, now."""


class HotPath(Protocol):
    """The hot store operations on one database."""

    @property
    def write_lock(self) -> AbstractAsyncContextManager[Any]:
        """What every writer of this process on the database queues on (SQLite's one writer), the
        API side's SQLAlchemy writers included; a no-op where the database has row locks."""

    async def create_task(self, values: dict[str, Any], node_ids: Sequence[str], if_latest: bool = False) -> int | None:
        """Insert a task (``task_rows.new_task_values``: queued, or running under a claim) and a pending run per node id;
        its id, or None when its idempotency key was taken or, with ``if_latest``, its revision is
        not its flow's latest (or the flow is deleted): nothing written. ``RevisionNotFound``."""

    def wake_workers(self) -> None:
        """Tell idle workers of every process, a moment after, that tasks were queued (returns at once)."""

    async def earlier_task(self, flow_id: str, key: str) -> tuple[Task, str | None] | None:
        """The task created with this idempotency key on this flow, and its request fingerprint."""

    async def get_task(self, task_id: int, items: bool) -> Task | None:
        """The task and its node runs (its map items' too if ``items``), from one snapshot."""

    async def claim_tasks(self, worker: str, lease_s: float, limit: int, pools: Sequence[str]) -> list[Task]:
        """See :meth:`graph_runtime.ports.TaskStore.claim_tasks`."""

    async def claim_task(self, task_id: int, worker: str, lease_s: float) -> Task | None:
        """Claim ``task_id`` if it is queued."""

    async def save_runs(self, rows: Sequence[tuple[int, NodeRun]], leases: Mapping[int, Lease],
                        events: Sequence[EventBatch] = ()) -> Fenced:
        """Upsert node runs, and store ``events`` (each fenced by its epoch, a number never written
        twice) in the same transaction; what the fence kept out. ``TaskNotFound``."""

    async def events_since(self, cursors: Mapping[int, int]) -> list[TaskEvent]:
        """Each task's stored events after the ``seq`` given for it, in (task, seq) order."""

    async def last_event_seq(self, task_id: int) -> int:
        """The highest ``seq`` stored for the task; 0 when it has none."""

    async def finish_task(self, task_id: int, outcome: TaskOutcome, runs: Sequence[NodeRun], lease: Lease | None,
                          events: Sequence[EventBatch] = ()) -> None:
        """Record the task's end, these runs and events, drop the lease. ``TaskNotFound``, ``LeaseLost``."""

    async def park_task(self, task_id: int, pool: str, runs: Sequence[NodeRun], lease: Lease) -> None:
        """See :meth:`graph_runtime.ports.TaskStore.park_task`."""

    async def cancel_flag(self, task_id: int) -> bool | None:
        """Whether a cancel was asked; None when there is no such task."""

    async def task_status(self, task_id: int) -> TaskStatus | None:
        """The task's status alone (no node run read); None when there is no such task."""

    async def renew_leases(self, worker: str, task_ids: Sequence[int], lease_s: float) -> set[int]:
        """Extend ``worker``'s leases on these running tasks; the ids it still holds."""

    async def flow_revision(self, flow_id: str, revision: int | None) -> tuple[bool, int | None, datetime | None] | None:
        """``(deleted, revision, created)`` of the latest or given revision; None if the flow never existed."""

    async def flow_definition(self, flow_id: str, revision: int) -> dict[str, Any]:
        """The stored definition of a revision. ``FlowNotFound``, ``RevisionNotFound``."""

    async def cache_get(self, key: str) -> tuple[str, float, datetime] | None:
        """The cached output (JSON text), its cost and last hit."""

    async def cache_touch(self, key: str, now: datetime) -> None:
        """Mark the entry used ``now``."""

    async def cache_put(self, row: CacheRow, evict_to: int | None) -> int | None:
        """Upsert an entry; with ``evict_to``, evict least recently hit entries down to it (one
        evictor at a time) and return the total left."""

    async def cache_evict(self, max_bytes: int) -> int:
        """Evict down to ``max_bytes`` now; the total left."""

    async def close(self) -> None:
        """Close its connections; later calls raise ``StoreClosed``/``StoreUnavailable``."""


def outcome_raised(outcome: str, task_id: int) -> None:
    """The answer of a fenced write: ``"ok"``, or ``"missing"`` / ``"lost"`` raised."""
    if outcome == "missing":
        raise errors.TaskNotFound(f"no task has the id {task_id}")
    if outcome == "lost":
        raise errors.LeaseLost(f"task {task_id} is no longer leased to this worker", task_ids=frozenset({task_id}))


async def encoded(row_codec: RowCodec, rows: Sequence[tuple[int, NodeRun]]) -> list[tuple[Any, ...]]:
    """``run_params`` of these rows; encoded on a thread when their outputs are large, so a
    multi-megabyte output never holds the event loop while it becomes JSON text."""
    return await encoded_as(row_codec, rows, list)


async def encoded_as(row_codec: RowCodec, rows: Sequence[tuple[int, NodeRun]],
                     then: Callable[[list[tuple[Any, ...]]], T]) -> T:
    """``then(run_params of these rows)``, both on a thread when the outputs are large (see :func:`encoded`)."""
    if codec.size_exceeds([run.output for _, run in rows], THREAD_ABOVE_BYTES):
        return await asyncio.to_thread(lambda: then([row_codec.run_params(task_id, run) for task_id, run in rows]))
    return then([row_codec.run_params(task_id, run) for task_id, run in rows])


def outcome_values(outcome: TaskOutcome, row_codec: RowCodec) -> tuple[Any, ...]:
    """A task end's column values: status, finished, execution time and cost, result and error (JSON text)."""
    return (TaskStatus(outcome.status).value, row_codec.encode_dt(outcome.finished), outcome.execution_time,
            outcome.execution_cost, json_text(outcome.result),
            json_text(outcome.error.as_dict() if outcome.error else None))


def evictable(oldest: Sequence[Sequence[Any]], total: int, max_bytes: int) -> tuple[list[str], int]:
    """Of the least recently hit cache entries ``(key, size)``, the keys to delete for ``total`` to
    fit within ``max_bytes``, and the total once they are gone."""
    doomed = []
    for key, size in oldest:
        if total <= max_bytes:
            break
        doomed.append(key)
        total -= int(size)
    return doomed, total
