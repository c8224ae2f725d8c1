"""New work wakes idle workers at once on PostgreSQL: ``LISTEN``/``NOTIFY`` (SPEC §10).

Whatever puts a task in the queue (an execute, a release at shutdown, a requeue after a lost
lease) sends ``NOTIFY graph_runtime_work`` in the same transaction, so a worker hears of it the
moment it commits, whichever process or machine queued it. Each worker listens on a connection
of its own (:func:`storage.engine.listen`); if it drops, it reconnects every second, quietly, and
the scheduler's poll covers the gap. SQLite needs none of this: one machine, and the process
that queues a task wakes its own scheduler directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from storage import engine as engines

log = logging.getLogger(__name__)

CHANNEL = "graph_runtime_work"
ENDED_CHANNEL = "graph_runtime_ended"  # a task ended (its id): see PgEndings
_NOTIFY = sa.text(f"SELECT pg_notify('{CHANNEL}', '')")
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
    """:class:`graph_runtime.events.EndNotices` on PostgreSQL: a task's end commits with
    ``NOTIFY graph_runtime_ended, '<its id>'`` (:mod:`storage.pg_hot_path`), so an API process
    waiting for a task a worker elsewhere runs (``?wait``, a stream) reads its last events at
    once instead of at its next poll. ``on_end(None)`` after each (re)connection: look now."""

    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__(engine, ENDED_CHANNEL)

    async def start(self, on_end: Callable[[int | None], None]) -> None:
        await self._start(lambda payload: on_end(int(payload) if payload.isdigit() else None))


def pg_wakeups(engine: AsyncEngine) -> PgWakeups | None:
    """The wake-ups for ``engine``'s database: None on SQLite."""
    return PgWakeups(engine) if engine.dialect.name == "postgresql" else None


def pg_endings(engine: AsyncEngine) -> PgEndings | None:
    """The task-end notices for ``engine``'s database: None on SQLite (its poll is all there is)."""
    return PgEndings(engine) if engine.dialect.name == "postgresql" else None
