"""New work wakes idle workers at once on PostgreSQL: ``LISTEN``/``NOTIFY`` (SPEC §10).

Whatever puts a task in the queue sends ``NOTIFY graph_runtime_work``, so a worker hears of it
the moment it commits, whichever process or machine queued it: a release at shutdown or a
requeue after a lost lease in the same transaction; a new task just after its insert commits,
in a statement of its own shared by the tasks queued meanwhile (``storage.pg_hot_path._WakeUps``:
a NOTIFY in the insert held a database-wide lock through each execute's commit), and not at all
when the scheduler of the process that queued it has a slot free and takes it at once. Each worker listens on a connection
of its own (:func:`storage.engine.listen`); if it drops, it reconnects every second, quietly, and
the scheduler's poll covers the gap. SQLite needs none of this: one machine, and the process
that queues a task wakes its own scheduler directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from storage import engine as engines

log = logging.getLogger(__name__)

CHANNEL = "graph_runtime_work"
ENDED_CHANNEL = "graph_runtime_ended"  # a task ended (its id): see PgEndings
_NOTIFY = sa.text(f"SELECT pg_notify('{CHANNEL}', '')")
# The watcher is this process, or "*" once two processes wait (each end then notifies). Rows are
# locked in id order, as every multi-row write of the hot path takes them (no deadlock).
_WATCH = sa.text(
    "UPDATE task SET watcher = CASE WHEN watcher IS NULL THEN :me ELSE '*' END WHERE id IN (SELECT id FROM task"
    " WHERE id = ANY(:ids) AND watcher IS DISTINCT FROM :me AND watcher IS DISTINCT FROM '*'"
    " AND status IN ('queued', 'running') ORDER BY id FOR UPDATE)"
).bindparams(sa.bindparam("ids", type_=sa.ARRAY(sa.BigInteger())))
RECONNECT_S = 1.0


async def notify_work(conn: AsyncConnection) -> None:
    """Tell every listening worker, when ``conn``'s transaction commits, that work was queued."""
    if conn.dialect.name == "postgresql":
        await conn.execute(_NOTIFY)


class _Listener:
    """A ``LISTEN`` on ``channel`` for as long as it runs: reconnects every RECONNECT_S, quietly;
    ``on_payload("")`` once after each (re)connection, for what was sent while not listening."""

    def __init__(self, engine: AsyncEngine, channel: str) -> None:
        self._engine = engine
        self._channel = channel
        self._task: asyncio.Task[None] | None = None

    async def _start(self, on_payload: Callable[[str], None]) -> None:
        connected = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._listen(on_payload, connected), name=f"listen-{self._channel}")
        with contextlib.suppress(TimeoutError):  # listening late is fine: the poll covers it
            async with asyncio.timeout(5):
                await asyncio.shield(connected)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _listen(self, on_payload: Callable[[str], None], connected: asyncio.Future[None]) -> None:
        while True:
            listening = None
            try:
                listening = await engines.listen(self._engine, self._channel, on_payload)
                if not connected.done():
                    connected.set_result(None)
                on_payload("")  # whatever was sent while not listening
                await listening.lost
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database is away: the poll goes on meanwhile
                log.debug("not listening on %s: %s", self._channel, exc, extra={"action": "wakeups_retry"})
            finally:
                if listening is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.shield(listening.close(timeout=2))
            await asyncio.sleep(RECONNECT_S)


class PgWakeups(_Listener):
    """:class:`graph_runtime.ports.WorkWakeups` on PostgreSQL: ``on_work`` is called (on the
    worker's loop) for each notification, and once after each (re)connection."""

    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__(engine, CHANNEL)

    async def start(self, on_work: Callable[[], None]) -> None:
        await self._start(lambda _payload: on_work())


class PgEndings(_Listener):
    """:class:`graph_runtime.events.EndNotices` on PostgreSQL: the end of a task whose ``watcher``
    is a process other than the one ending it commits with ``NOTIFY graph_runtime_ended, '<its
    id>'`` (:mod:`storage.pg_hot_path`), so an API process waiting for a task a worker elsewhere
    runs (``?wait``, a stream) reads its last events at once instead of at its next poll.
    ``on_end(None)`` after each (re)connection: look now. A process names itself the watcher
    (``me``, its scheduler's worker id) as an execute with ``?wait`` creates the task, or by
    :meth:`watch`.

    Only such ends: a ``NOTIFY`` in a writing transaction takes a database-wide lock that is held
    through the commit's WAL flush, so ends that all notified were committed one at a time (two
    ``serve`` processes finished fewer flows than one)."""

    def __init__(self, engine: AsyncEngine, me: str) -> None:
        super().__init__(engine, ENDED_CHANNEL)
        self._me = me

    async def start(self, on_end: Callable[[int | None], None]) -> None:
        await self._start(lambda payload: on_end(int(payload) if payload.isdigit() else None))

    async def watch(self, task_ids: Sequence[int]) -> None:
        # A task that ends before this commits is not marked, and the caller's read after it finds the end.
        try:
            async with self._engine.begin() as conn:
                await conn.execute(_WATCH, {"ids": list(task_ids), "me": self._me})
        except Exception as exc:  # the database is away: the poll goes on meanwhile
            log.debug("cannot ask for end notices: %s", exc, extra={"action": "end_watch_failed"})


def pg_wakeups(engine: AsyncEngine) -> PgWakeups | None:
    """The wake-ups for ``engine``'s database: None on SQLite."""
    return PgWakeups(engine) if engine.dialect.name == "postgresql" else None


def pg_endings(engine: AsyncEngine, me: str) -> PgEndings | None:
    """The task-end notices for ``engine``'s database, for the process whose workers are ``me``:
    None on SQLite (its poll is all there is)."""
    return PgEndings(engine, me) if engine.dialect.name == "postgresql" else None
