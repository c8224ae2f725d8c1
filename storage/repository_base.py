"""What every part of the repository shares: the engine, transactions, dialect-specific SQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from graph_runtime.errors import StoreUnavailable
from storage import engine as engines
from storage.errors import translated


class RepositoryBase:
    """Connections on one engine: each public call reads on one connection, or writes in
    exactly one transaction.

    On SQLite, writers are serialised by an ``asyncio.Lock`` as well as ``BEGIN IMMEDIATE``:
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
        # A SQLite file's hot statements go through inline sqlite3 connections (see sqlite_inline);
        # their write lock is the one every writer of this engine in this process queues on.
        self._inline = engines.inline(engine)
        lock: AbstractAsyncContextManager[Any] = nullcontext()
        if self._inline is not None:
            lock = self._inline.write_lock
        elif self._dialect == "sqlite":
            lock = asyncio.Lock()
        self._write_lock = lock
        # An in-memory database is one shared connection: readers must queue behind writers too.
        self._read_lock = lock if engines.is_memory_sqlite(engine) else nullcontext()

    @property
    def engine(self) -> AsyncEngine:
        """The engine this repository uses (not owned: dispose of it with ``storage.engine.dispose``)."""
        return self._engine

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[AsyncConnection]:
        """A connection for reads: each statement sees the latest commit; nothing is committed."""
        async with translated(), self._read_lock, self._reader.connect() as conn:
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
