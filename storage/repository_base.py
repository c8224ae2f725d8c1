"""What every part of the repository shares: the engine, transactions, dialect-specific SQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from graph_runtime.errors import StoreUnavailable
from storage import engine as engines
from storage.errors import translated
from storage.hot_path import HotPath
from storage.pg_hot_path import PgHotPath
from storage.sqlite_hot_path import SqliteHotPath


class RepositoryBase:
    """Connections on one engine: each public call reads on one connection, or writes in
    exactly one transaction.

    The hot operations go through ``self._hot`` (:mod:`storage.hot_path`); the rest through
    SQLAlchemy Core on ``engine``. On SQLite, writers are serialised by an ``asyncio.Lock`` as well as ``BEGIN IMMEDIATE``:
    the lock queues this process's writers fairly without holding a pooled connection, and
    ``BEGIN IMMEDIATE`` + ``busy_timeout`` covers other processes (a CLI next to the server).
    PostgreSQL needs neither: its row locks and ``SKIP LOCKED`` do the work.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._reader = engines.reader(engine)
        self._writer = engines.writer(engine)
        self._dialect = engine.dialect.name
        self._insert: Callable[..., Any] = sqlite.insert if self._dialect == "sqlite" else postgresql.insert
        # The hot operations' one implementation on this engine (chosen here, once). On SQLite its
        # write lock is the one every writer of this engine in this process queues on.
        self._hot = hot_path(engine)
        self._write_lock = self._hot.write_lock

    @property
    def engine(self) -> AsyncEngine:
        """The engine this repository uses (not owned: dispose of it with ``storage.engine.dispose``)."""
        return self._engine

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[AsyncConnection]:
        """A connection for reads: each statement sees the latest commit; nothing is committed."""
        async with translated(), self._reader.connect() as conn:
            yield conn

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        """A writing transaction, committed when the block exits without an exception.

        Waiting for this process's writer queue is bounded by the busy timeout too: behind a
        lock held by another process, each writer answers StoreUnavailable after at most two
        busy timeouts (queue, then BEGIN IMMEDIATE) instead of one per writer ahead of it.
        """
        async with translated():
            try:
                async with asyncio.timeout(engines.BUSY_TIMEOUT_S):
                    await self._write_lock.__aenter__()
            except TimeoutError:
                raise StoreUnavailable("the database is busy (locked by another process); try again shortly") from None
            try:
                async with self._writer.begin() as conn:
                    yield conn
            finally:
                await self._write_lock.__aexit__(None, None, None)


def hot_path(engine: AsyncEngine) -> HotPath:
    """The hot path of ``engine``'s database: stdlib sqlite3 on SQLite, asyncpg on PostgreSQL (their
    connections are the engine's, closed by ``storage.engine.dispose``)."""
    lite = engines.inline(engine)
    return SqliteHotPath(lite) if lite is not None else PgHotPath(engines.pg_pool(engine))
