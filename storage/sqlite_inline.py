"""SQLite's hot path: whole transactions on stdlib ``sqlite3``, run inline on the event loop.

Why not aiosqlite here: every aiosqlite call is one hop to its thread and back, and on this
class of machine a hop costs ~120-140 µs while a whole small WAL transaction (BEGIN IMMEDIATE,
an upsert, COMMIT with ``synchronous=NORMAL``, so no fsync) costs ~25 µs. A node's end went
through three hops (BEGIN, upsert, COMMIT) plus SQLAlchemy's statement machinery; here it is one
function call. aiosqlite has no public way to run a whole transaction in one hop.

What keeps the event loop free:

* Another process holding the write lock never blocks the loop: the connections use
  ``busy_timeout=0`` and a busy transaction is retried after an ``asyncio.sleep`` with SQLite's
  own back-off, for at most :data:`storage.engine.BUSY_TIMEOUT_S`, then raises
  ``StoreUnavailable`` (as the aiosqlite path does after its busy timeout).
* Checkpoints (copying the WAL back into the database file, with an fsync) run on a thread:
  the inline writer never auto-checkpoints.
* A transaction carrying a large payload (a big node output) runs on a thread too, so writing
  a multi-megabyte row does not stall other requests (its JSON is encoded on the loop, before).

Readers get their own connection (WAL: they never wait for the writer). The asyncio write lock
is the one SQLAlchemy's writers take, so this process's writers queue fairly whichever path they use.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Callable
from typing import Any, TypeVar

from graph_runtime.errors import StoreClosed, StoreUnavailable
from graph_runtime.shielding import outlast_cancel
from storage.errors import SCHEMA_MISTAKES, StorageError

T = TypeVar("T")

# Milliseconds between tries of a busy database: first a few short ones, since another process's
# transaction holds the lock for tens of microseconds, then SQLite's own busy handler's
# (sqliteDefaultBusyCallback) for a lock held long. asyncio's timers wake an idle loop no sooner
# than 1 ms (epoll's resolution); on a busy loop, the retry comes at the first turn after the
# pause. `serve --processes 2` on SQLite: 1.11-1.18x one process with SQLite's 1 ms first pause,
# 1.19-1.38x with these (noisy runs); 50 µs steps cost more CPU than they saved, and a kernel
# flock waited for on a thread was slower (a thread hop per hand-over).
_BACKOFF_MS = (0.1, 0.1, 0.2, 0.2, 0.5, 0.5, 1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50, 100)
_CHECKPOINT_EVERY = 500  # commits between background checkpoints (a few pages each: a few MB of WAL)
THREAD_ABOVE_BYTES = 256 * 1024  # a write this big runs on a thread


def _is_busy(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def _connect(path: str, pragmas: tuple[str, ...]) -> sqlite3.Connection:
    # timeout=0: even opening (the pragmas) must not wait on the loop for a lock held elsewhere.
    conn = sqlite3.connect(path, timeout=0, isolation_level=None, check_same_thread=False, cached_statements=256)
    for pragma in pragmas:
        conn.execute(pragma)
    conn.execute("PRAGMA busy_timeout=0")  # never block the loop: busy is retried asynchronously
    return conn


class SqliteInline:
    """Two ``sqlite3`` connections to one database file: a writer and a reader.

    Args:
        path: the database file (created and in WAL mode already).
        pragmas: run on each connection as it opens (the engine's: WAL, synchronous, foreign keys).
        busy_timeout_s: how long a busy database is retried before ``StoreUnavailable``.
    """

    def __init__(self, path: str, pragmas: tuple[str, ...], busy_timeout_s: float) -> None:
        self.path = path
        self.busy_timeout_s = busy_timeout_s
        self.write_lock = asyncio.Lock()
        self._pragmas = pragmas
        self._writer: sqlite3.Connection | None = None  # opened on first use (the file may not exist yet)
        self._reader: sqlite3.Connection | None = None
        self._commits = 0
        self._checkpoint: asyncio.Future[None] | None = None
        self._closed = False

    async def write(self, work: Callable[[sqlite3.Connection], T], *, size: int = 0) -> T:
        """Run ``work`` in one ``BEGIN IMMEDIATE`` transaction; commit if it returns, roll back if it raises.

        ``work`` must do nothing but SQL: it may run more than once (the database was busy).
        ``size``: roughly how many bytes it writes; above :data:`THREAD_ABOVE_BYTES` it runs on a thread.
        """
        # One deadline for queueing behind this process's writers and for the busy database: behind
        # another process's lock every writer is answered within the busy timeout, not one per writer ahead.
        deadline = time.monotonic() + self.busy_timeout_s
        async with self._locked(deadline):
            if self._writer is None:
                self._writer = self._open()
                self._writer.execute("PRAGMA wal_autocheckpoint=0")  # see _after_commit
            result = await self._retrying(self._writer, work, "BEGIN IMMEDIATE", size > THREAD_ABOVE_BYTES, deadline)
            self._after_commit()
            return result

    async def read(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` in one read transaction (one consistent snapshot of the database)."""
        if self._closed:
            raise StoreClosed("the database connection is closed")
        if self._reader is None:
            self._reader = self._open()
        return await self._retrying(self._reader, work, "BEGIN", False, time.monotonic() + self.busy_timeout_s)

    async def close(self) -> None:
        """Close both connections once the write in flight (or checkpoint) is over; later calls raise StoreUnavailable."""
        self._closed = True  # a writer retrying a busy database gives up at its next try
        async with self.write_lock:
            pass
        if self._checkpoint is not None:
            with contextlib.suppress(Exception):
                await self._checkpoint
        for conn in (self._writer, self._reader):
            if conn is not None:
                conn.close()
        self._writer = self._reader = None

    def _open(self) -> sqlite3.Connection:
        try:
            return _connect(self.path, self._pragmas)
        except sqlite3.Error as exc:
            raise _translate(exc) from exc

    @contextlib.asynccontextmanager
    async def _locked(self, deadline: float) -> Any:
        if self._closed:
            raise StoreClosed("the database connection is closed")
        try:
            if self.write_lock.locked():
                async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                    await self.write_lock.acquire()
            else:
                await self.write_lock.acquire()  # free: taken without yielding
        except TimeoutError:
            raise StoreUnavailable("the database is busy (locked by another process); try again shortly") from None
        try:
            if self._closed:  # closed while this writer queued
                raise StoreClosed("the database connection is closed")
            yield
        finally:
            self.write_lock.release()

    async def _retrying(self, conn: sqlite3.Connection, work: Callable[[sqlite3.Connection], T], begin: str,
                        threaded: bool, deadline: float) -> T:
        for attempt in range(1_000_000):
            if self._closed:
                raise StoreClosed("the database connection is closed")
            try:
                if threaded:
                    # A thread cannot be stopped: a cancelled caller keeps the lock and the
                    # connection until its transaction is over.
                    return await outlast_cancel(asyncio.to_thread(_transaction, conn, work, begin))
                return _transaction(conn, work, begin)
            except sqlite3.IntegrityError:
                raise  # the statement's caller knows which constraint it can break
            except sqlite3.Error as exc:
                if not _is_busy(exc):
                    raise _translate(exc) from exc
                pause = _BACKOFF_MS[min(attempt, len(_BACKOFF_MS) - 1)] / 1000
                if time.monotonic() + pause > deadline:
                    raise StoreUnavailable(
                        "the database is busy (locked by another process); try again shortly"
                    ) from None
                await asyncio.sleep(pause)
        raise AssertionError("unreachable")

    def _after_commit(self) -> None:
        self._commits += 1
        if self._commits >= _CHECKPOINT_EVERY and (self._checkpoint is None or self._checkpoint.done()):
            self._commits = 0
            self._checkpoint = asyncio.ensure_future(self._checkpoint_now())

    async def _checkpoint_now(self) -> None:
        # A checkpoint racing commits never catches up, and the WAL would grow without end. So:
        # a first pass copies the bulk while commits go on, then a second one under the write
        # lock copies the few frames committed meanwhile, completes, and the next commit starts
        # the WAL over. Writers queue only for that short second pass; the loop stays free.
        await asyncio.to_thread(self._run_checkpoint)
        async with self.write_lock:
            if not self._closed:
                await asyncio.to_thread(self._run_checkpoint)

    def _run_checkpoint(self) -> None:
        # Its own short-lived connection: the inline reader may be in use on the loop meanwhile.
        # PASSIVE never waits for readers; what it cannot copy now, the next one will.
        try:
            conn = _connect(self.path, self._pragmas)
        except sqlite3.Error:
            return
        try:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error:
            pass  # a checkpoint that could not run is retried after the next batch of commits
        finally:
            conn.close()


def _transaction(conn: sqlite3.Connection, work: Callable[[sqlite3.Connection], T], begin: str) -> T:
    conn.execute(begin)
    try:
        result = work(conn)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return result


def _translate(exc: sqlite3.Error) -> Exception:
    message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if isinstance(exc, sqlite3.OperationalError) and not any(mistake in message for mistake in SCHEMA_MISTAKES):
        return StoreUnavailable(f"the database is unavailable: {message}")
    return StorageError(f"database error: {message}")
