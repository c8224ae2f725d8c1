"""Leases: which worker runs a task, kept alive by its heartbeat, and recovery when one dies."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Collection
from contextlib import AbstractAsyncContextManager

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from graph_runtime.models import TaskStatus
from storage import convert
from storage import engine as engines
from storage.repository_base import RepositoryBase
from storage.tables import task as task_t
from storage.wakeups import notify_work

_QUEUED, _RUNNING = TaskStatus.QUEUED.value, TaskStatus.RUNNING.value
# Back in the queue: not started, not leased. cancel_requested is kept, so a resuming worker
# cancels the task at once.
REAPER_LOCK_KEY = 7270562
"""The advisory lock a lease sweep holds on PostgreSQL (an arbitrary id of "the lease reaper")."""
_REAPER_LOCK = sa.text(f"SELECT pg_try_advisory_xact_lock({REAPER_LOCK_KEY})")
_REQUEUED = {"status": _QUEUED, "started": None, "lease_owner": None, "lease_expires": None}


class LeaseMethods(RepositoryBase):
    async def renew_leases(self, worker: str, task_ids: Collection[int], lease_s: float) -> set[int]:
        """Extend this worker's leases on ``task_ids``; return the ids it still holds.

        An id missing from the answer was taken away (its lease expired and another worker
        recovered it): the caller must stop running it.
        """
        if not task_ids:
            return set()
        return await self._hot.renew_leases(worker, list(task_ids), lease_s)

    async def release_tasks(self, worker: str, task_ids: Collection[int]) -> int:
        """Put tasks this worker stops running (a graceful shutdown) straight back in the queue."""
        if not task_ids:
            return 0
        async with self._write() as conn:
            result = await conn.execute(
                sa.update(task_t)
                .where(task_t.c.id.in_(list(task_ids)), task_t.c.lease_owner == worker, task_t.c.status == _RUNNING)
                .values(_REQUEUED)
            )
            if result.rowcount:
                await notify_work(conn)
        return result.rowcount

    async def requeue_expired(self, exclude_worker: str | None = None, *, running: Collection[int] = ()) -> int:
        """Requeue running tasks whose lease expired; return how many.

        An expired lease means its worker died, froze past the lease, or could not record the
        task's end: each requeue counts in the task's ``interruptions`` (the crash-loop guard
        reads it). The task resumes with whoever claims it; the old worker's writes are fenced.

        Args:
            exclude_worker: the caller's own id, and ``running`` the tasks it still runs: those
                are never requeued, even if a long database lock delayed their renewals. The
                caller's other tasks with an expired lease (whose end it could not record) are.

        A task with no lease at all (left by a build before leases) counts as expired; a task
        parked for a pool (no lease, on purpose) never does.

        One reaper at a time: on PostgreSQL the sweep takes a transaction-level advisory lock,
        and while another process holds it this returns 0 at once (that one sweeps for all).
        SQLite's write lock serializes sweeps already.
        """
        async with self._write() as conn:
            if self._dialect == "postgresql" and not (await conn.execute(_REAPER_LOCK)).scalar():
                return 0
            now = convert.utcnow()  # after the write lock, like renew_leases
            expired = sa.or_(task_t.c.lease_expires.is_(None), task_t.c.lease_expires < now)
            query = sa.update(task_t).where(task_t.c.status == _RUNNING, task_t.c.pool.is_(None), expired)
            if exclude_worker is not None and running:
                still_here = sa.and_(task_t.c.lease_owner == exclude_worker, task_t.c.id.in_(list(running)))
                query = query.where(sa.not_(still_here))
            result = await conn.execute(query.values({**_REQUEUED, "interruptions": task_t.c.interruptions + 1}))
            if result.rowcount:
                await notify_work(conn)
        return result.rowcount


def lease_renewer(engine: AsyncEngine) -> Callable[[], AbstractAsyncContextManager[LeaseMethods]]:
    """What the heartbeat thread opens: its own connections to ``engine``'s database, on the hot path
    like the worker's (stdlib sqlite3, or asyncpg), so renewals never wait for the worker's event loop."""
    url = engine.url.render_as_string(hide_password=False)

    @contextlib.asynccontextmanager
    async def opened() -> AsyncIterator[LeaseMethods]:
        own = engines.create_engine(url)
        try:
            yield LeaseMethods(own)
        finally:
            await engines.dispose(own)

    return opened
