"""Engine creation: the only module that knows the database drivers.

Two backends: ``sqlite+aiosqlite:///path`` (embedded, the default) and
``postgresql+asyncpg://user@host/db`` (for several processes; ``pip install 'graph-runtime[postgres]'``).

Also what every process does first on a database, one process at a time (:func:`start_lock`): the
schema upgrade (:func:`create_schema`, revisions in ``storage/migrations``) and the first key.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncTransaction, create_async_engine

from graph_runtime.errors import StoreClosed, StoreUnavailable
from nodes import codec
from nodes.errors import GraphRuntimeError
from storage import convert, migrations, tables
from storage.errors import DatabaseUrlError, IntegrityViolation, StorageError, translated, unavailable_sqlstate
from storage.migrations import SchemaVersions
from storage.sqlite_inline import SqliteInline

log = logging.getLogger(__name__)

WRITE_OPTION = "graph_runtime_write"
"""Execution option marking an engine whose transactions write.

On SQLite only those begin a transaction (``BEGIN IMMEDIATE``); other connections read in
autocommit mode. Use :func:`writer` for anything that writes.
"""

EXCLUSIVE = "exclusive"
"""``WRITE_OPTION``'s value for a SQLite transaction that begins with ``BEGIN EXCLUSIVE`` (the start lock)."""

START_LOCK_KEY = int.from_bytes(b"gr-start", "big")
"""The ``pg_advisory_lock`` key that serializes schema upgrades and the first key ("gr-start" in ASCII)."""

BUSY_TIMEOUT_S = 5.0
"""How long a SQLite writer waits for a lock held elsewhere before StoreUnavailable (API: 503)."""

_SQLITE_PRAGMAS = (
    # Readers never wait for the writer, and a commit does not fsync the main file.
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    # Another process holding the write lock makes us wait up to 5 s, not fail at once.
    f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}",
    "PRAGMA foreign_keys=ON",
)


@dataclass(frozen=True)
class _Backend:
    driver: str  # the SQLAlchemy drivername we use
    module: str  # the DBAPI module it needs
    install: str  # how to get it


_BACKENDS = {
    "sqlite": _Backend("sqlite+aiosqlite", "aiosqlite", "pip install aiosqlite"),
    "postgresql": _Backend("postgresql+asyncpg", "asyncpg", "pip install 'graph-runtime[postgres]'"),
}
_ALIASES = {"postgres": "postgresql"}


def create_engine(url: str) -> AsyncEngine:
    """Create the async engine for a database URL.

    ``sqlite://`` and ``postgresql://`` (or ``postgres://``) without a driver get ours
    (aiosqlite, asyncpg). JSON columns use the project's orjson codec.

    Args:
        url: ``sqlite+aiosqlite:///path/to/file.db`` or ``postgresql+asyncpg://user@host:5432/db``.

    Raises:
        DatabaseUrlError: the URL is malformed, names another database or driver, or the
            driver is not installed (the message says what to install).
    """
    parsed, backend = _resolve(url)
    if backend.module == "aiosqlite" and parsed.database in (None, "", ":memory:"):
        # The hot path (stdlib sqlite3) and the API side (SQLAlchemy) open connections of their
        # own, and each would see another empty in-memory database.
        raise DatabaseUrlError("an in-memory SQLite database is not supported: name a file "
                               "(sqlite+aiosqlite:///path/to/file.db; on a tmpfs for speed)")
    if importlib.util.find_spec(backend.module) is None:
        raise DatabaseUrlError(
            f"the {parsed.get_backend_name()} driver {backend.module!r} is not installed: {backend.install}"
        )
    options: dict[str, Any] = {
        "json_serializer": codec.dumps_str,
        "json_deserializer": codec.loads,
        # Nothing is ever left open on a returned connection: writes end in COMMIT/ROLLBACK inside
        # begin(), reads run without a transaction. The default ROLLBACK on return was one more
        # round trip to the driver's thread for every read (the benchmark counted 15 per flow).
        "pool_reset_on_return": None,
    }
    if backend.module == "asyncpg":
        # Fail fast when the server is unreachable instead of asyncpg's 60 s default.
        options["connect_args"] = {"timeout": 10, "server_settings": {"application_name": "graph-runtime"}}
    engine = create_async_engine(parsed, **options)
    if backend.module == "aiosqlite":
        _configure_sqlite(engine)
    return engine


def writer(engine: AsyncEngine) -> AsyncEngine:
    """A view of ``engine`` (same pool) whose transactions take the write lock up front."""
    return engine.execution_options(**{WRITE_OPTION: True})


def reader(engine: AsyncEngine) -> AsyncEngine:
    """A view of ``engine`` (same pool) for reads, with no BEGIN/COMMIT round trips.

    PostgreSQL: autocommit. SQLite: the engine itself, whose reads already skip BEGIN (the
    dialect's AUTOCOMMIT level would fight the BEGIN IMMEDIATE hook).
    """
    if engine.dialect.name == "postgresql":
        return engine.execution_options(isolation_level="AUTOCOMMIT")
    return engine


async def create_schema(engine: AsyncEngine) -> SchemaVersions:
    """Upgrade the schema to this code's version, one process at a time; returns where it was.

    An empty database gets every revision, one made before the schema was versioned is stamped
    at the first release and upgraded, one already current is left alone.

    Raises:
        SchemaTooNew: a newer graph-runtime wrote the database (the message names both versions).
        SchemaUnknown: the database has tables no release made.
    """
    async with translated(), start_lock(engine) as conn:
        found = await conn.run_sync(migrations.upgrade)
    if not found.current:
        log.info("schema upgraded: %s", found.describe(), extra={"action": "schema_upgraded"})
    return found


async def schema_versions(engine: AsyncEngine) -> SchemaVersions:
    """The database's schema version and this code's, without changing anything.

    Raises:
        SchemaTooNew: a newer graph-runtime wrote the database.
        SchemaUnknown: the database has tables no release made.
    """
    async with translated(), engine.connect() as conn:
        return await conn.run_sync(migrations.versions)


async def create_first_key(engine: AsyncEngine, key_id: str, name: str, scope: str, secret_hash: str) -> bool:
    """Store this key if the database has no key at all (``serve``'s first admin key); whether it did.

    The check and the insert run under :func:`start_lock`, so processes started together on an
    empty database create exactly one first key.
    """
    keys = tables.api_key
    async with translated(), start_lock(engine) as conn:
        if (await conn.execute(sa.select(sa.func.count()).select_from(keys))).scalar_one():
            return False
        await conn.execute(sa.insert(keys).values(id=key_id, name=name, scope=scope, secret_hash=secret_hash,
                                                  created=convert.utcnow()))
    return True


@asynccontextmanager
async def start_lock(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A transaction that one process at a time holds, among all the processes on the database.

    PostgreSQL: a session-level ``pg_advisory_lock`` taken before the transaction begins and
    released after it ends, so the next holder sees everything committed under it. SQLite:
    ``BEGIN EXCLUSIVE`` (waits up to BUSY_TIMEOUT_S for the writer lock). Commits when the
    block exits normally, rolls back when it raises.
    """
    if engine.dialect.name != "postgresql":
        conn, transaction = await _sqlite_exclusive(engine)
        try:
            yield conn
        except BaseException:
            await transaction.rollback()
            raise
        else:
            await transaction.commit()
        finally:
            await conn.close()
        return
    async with engine.connect() as conn:
        await conn.exec_driver_sql(f"SELECT pg_advisory_lock({START_LOCK_KEY})")
        await conn.commit()  # the lock is the session's; the work gets a transaction of its own
        try:
            async with conn.begin():
                yield conn
        finally:
            await _advisory_unlock(conn)


START_WAIT_S = 60.0
"""How long a starting process waits for another one's start (its schema upgrade) on SQLite."""


async def _sqlite_exclusive(engine: AsyncEngine) -> tuple[AsyncConnection, AsyncTransaction]:
    """A connection in a ``BEGIN EXCLUSIVE`` transaction, waiting for other starting processes.

    One busy timeout is too short here: the process ahead may be running every schema revision
    on a loaded machine, and even opening a connection (its pragmas) can find the file locked.
    Start-up can afford to wait, so a locked database is tried again until START_WAIT_S.
    """
    deadline = time.monotonic() + START_WAIT_S
    exclusive = engine.execution_options(**{WRITE_OPTION: EXCLUSIVE})
    while True:
        conn: AsyncConnection | None = None
        try:
            conn = await exclusive.connect()
            return conn, await conn.begin()
        except sa_exc.OperationalError as exc:
            if conn is not None:
                await conn.close()
            if "locked" not in str(exc.orig) or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def _advisory_unlock(conn: AsyncConnection) -> None:
    try:
        await conn.exec_driver_sql(f"SELECT pg_advisory_unlock({START_LOCK_KEY})")
        await conn.commit()
    except (sa_exc.DBAPIError, OSError):
        # Never return a connection that may still hold the lock to the pool: closing the
        # session releases it.
        await conn.invalidate()


async def dispose(engine: AsyncEngine) -> None:
    """Close every pooled connection (and the hot path's own: inline SQLite, asyncpg pool)."""
    found = _INLINE.pop(engine.sync_engine, None)
    if found is not None:
        await found.close()
    pool = _PG.pop(engine.sync_engine, None)
    if pool is not None:
        await pool.close()
    await engine.dispose()


_INLINE: weakref.WeakKeyDictionary[Any, SqliteInline] = weakref.WeakKeyDictionary()
_PG: weakref.WeakKeyDictionary[Any, PgPool] = weakref.WeakKeyDictionary()


def pg_pool(engine: AsyncEngine) -> PgPool:
    """The asyncpg pool of PostgreSQL's hot path on ``engine``'s database (one per engine)."""
    assert engine.dialect.name == "postgresql"
    found = _PG.get(engine.sync_engine)
    if found is None:
        found = _PG[engine.sync_engine] = PgPool(_asyncpg_dsn(engine))
    return found


def _asyncpg_dsn(engine: AsyncEngine) -> str:
    return engine.url.set(drivername="postgresql").render_as_string(hide_password=False)


async def _keep_session(conn: Any) -> None:
    """No reset query when a connection goes back to the pool: the hot path leaves no session state
    (no LISTEN, SET or session advisory lock; an open transaction is still rolled back by asyncpg),
    and asyncpg's default would be one more statement per use, an idle worker's poll included."""


class PgPool:
    """asyncpg connections for PostgreSQL's hot path (:mod:`storage.pg_hot_path`), without SQLAlchemy.

    The pool is created on first use, on the loop that uses it. Every driver error leaves as ours:
    a refused, dropped or overloaded connection is ``StoreUnavailable`` (the API answers 503, a
    worker retries), a broken constraint :class:`IntegrityViolation`, the rest ``StorageError``.
    After a lost connection every idle one is replaced on its next use, so the path recovers by
    itself, with one failure per loss, once the server is back.
    """

    def __init__(self, dsn: str, max_size: int = 10) -> None:
        self._dsn = dsn
        self._max_size = max_size
        self._pool: Any = None
        self._creating: asyncio.Lock | None = None
        self._closed = False
        # One connection kept out of the pool between uses, for whoever asks while it is free (most
        # uses: a worker's statements come one after another). asyncpg's acquire and release cost
        # ~30 µs of CPU each time, and a 10-node chain asks 15 times (the pool handed back the same
        # connection anyway: the saving is the pool's bookkeeping). The chain went from 5.7-6.2 to
        # 4.9-5.0 ms. Never reused after a block that raised or left a transaction open, nor once the
        # server closed it: it goes back to the pool, which resets or replaces it.
        self._kept: Any = None
        self._kept_in_use = False

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Any]:
        """A connection in autocommit: each statement is its own transaction."""
        pool = await self._opened()
        if self._kept_in_use:
            async with self._translating(pool), pool.acquire() as conn:
                yield conn
            return
        self._kept_in_use = True
        clean = False
        try:
            if self._kept is not None and not _reusable(self._kept):  # closed by the server while idle
                await self._give_back()
            async with self._translating(pool):
                if self._kept is None:
                    self._kept = await pool.acquire()
                yield self._kept
            clean = _reusable(self._kept)
        finally:
            self._kept_in_use = False
            if not clean or self._closed:  # closing: the pool's close waits for every connection out
                await self._give_back()

    @asynccontextmanager
    async def _translating(self, pool: Any) -> AsyncIterator[None]:
        try:
            yield
        except Exception as exc:
            translated, lost = self._translated(exc)
            if lost:
                await pool.expire_connections()  # the others are likely gone too (a restart)
            raise translated from exc

    async def _give_back(self) -> None:
        """The kept connection back to the pool (which rolls back, resets or replaces it)."""
        kept, self._kept = self._kept, None
        if kept is not None and self._pool is not None:
            with contextlib.suppress(Exception):
                await self._pool.release(kept)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Any]:
        """A connection in a transaction, committed when the block exits without an exception."""
        async with self.connection() as conn, conn.transaction():
            yield conn

    async def close(self) -> None:
        self._closed = True
        if not self._kept_in_use:  # else its block gives it back; close waits for it below
            await self._give_back()
        if self._pool is not None:
            pool, self._pool = self._pool, None
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await pool.close()
            pool.terminate()

    async def _opened(self) -> Any:
        if self._pool is not None:
            return self._pool
        if self._closed:
            raise StoreClosed("the database connection is closed")
        import asyncpg  # the postgres extra: an engine on PostgreSQL has it already

        if self._creating is None:
            self._creating = asyncio.Lock()
        async with self._creating:
            if self._pool is None:
                try:
                    self._pool = await asyncpg.create_pool(
                        self._dsn, min_size=1, max_size=self._max_size, timeout=10, reset=_keep_session,
                        server_settings={"application_name": "graph-runtime"})
                except Exception as exc:
                    raise self._translated(exc)[0] from exc
        return self._pool

    @staticmethod
    def _translated(exc: Exception) -> tuple[Exception, bool]:
        """Ours for a driver error, and whether it means the connection was lost."""
        import asyncpg

        if isinstance(exc, GraphRuntimeError):
            return exc, False  # raised by the caller's block: ours already
        if isinstance(exc, asyncpg.IntegrityConstraintViolationError):
            return IntegrityViolation(f"database error: {exc}"), False
        lost = isinstance(exc, (OSError, TimeoutError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
                                asyncpg.InternalClientError))  # the last: an idle connection the server closed
        # A deadlock or serialization failure is worth retrying too; so is a server that is
        # there but cannot serve now (shutting down, starting, too many connections).
        if lost or isinstance(exc, asyncpg.exceptions.TransactionRollbackError) or unavailable_sqlstate(exc):
            first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            return StoreUnavailable(f"the database is unavailable: {first_line}"), lost or unavailable_sqlstate(exc)
        if isinstance(exc, asyncpg.PostgresError):
            return StorageError(f"database error: {exc}"), False
        return exc, False


def _reusable(conn: Any) -> bool:
    """Whether a kept pool connection can serve the next block: open, and no transaction left open."""
    import asyncpg

    try:
        return not conn.is_closed() and not conn.is_in_transaction()
    except asyncpg.InterfaceError:  # detached: the pool took it back when it closed
        return False


def inline(engine: AsyncEngine) -> SqliteInline | None:
    """The inline connections for the hot statements of a SQLite file database (one per engine).

    None for PostgreSQL.
    """
    if engine.dialect.name != "sqlite":
        return None
    found = _INLINE.get(engine.sync_engine)
    if found is None:
        assert engine.url.database is not None
        found = _INLINE[engine.sync_engine] = SqliteInline(engine.url.database, _SQLITE_PRAGMAS, BUSY_TIMEOUT_S)
    return found


def _resolve(url: str) -> tuple[URL, _Backend]:
    try:
        parsed = make_url(url)
    except sa_exc.ArgumentError as exc:
        raise DatabaseUrlError(f"not a database URL: {url!r} ({exc})") from None
    name = _ALIASES.get(parsed.get_backend_name(), parsed.get_backend_name())
    backend = _BACKENDS.get(name)
    if backend is None:
        raise DatabaseUrlError(
            f"unsupported database {parsed.get_backend_name()!r} in {parsed.render_as_string()!r}: "
            "use sqlite+aiosqlite:///path/to/file.db or postgresql+asyncpg://user@host/db"
        )
    _, plus, driver = parsed.drivername.partition("+")
    if plus and driver != backend.module:
        raise DatabaseUrlError(
            f"unsupported driver {parsed.drivername!r}: use {backend.driver}:// (async, {backend.module})"
        )
    return parsed.set(drivername=backend.driver), backend


def _configure_sqlite(engine: AsyncEngine) -> None:
    # SQLAlchemy's documented recipe (SQLite dialect, "Enabling Non-Legacy SQLite Transactional
    # Modes", aiosqlite variant): the driver stops emitting BEGIN itself and we emit our own, so
    # a writing transaction starts with BEGIN IMMEDIATE. A deferred BEGIN that later writes
    # fails with "database is locked" at once when another connection writes; IMMEDIATE waits
    # for the lock (busy_timeout) before it has read anything, so it never deadlocks.
    event.listen(engine.sync_engine, "connect", _on_sqlite_connect)
    event.listen(engine.sync_engine, "begin", _on_sqlite_begin)


def _on_sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        for pragma in _SQLITE_PRAGMAS:
            cursor.execute(pragma)
    finally:
        cursor.close()


def _on_sqlite_begin(conn: Connection) -> None:
    # Reads run without BEGIN (autocommit, each statement its own WAL snapshot): a SELECT never
    # takes a lock worth holding, and skipping BEGIN saves a round trip to aiosqlite's thread.
    mode = conn.get_execution_options().get(WRITE_OPTION, False)
    if mode:
        conn.exec_driver_sql("BEGIN EXCLUSIVE" if mode == EXCLUSIVE else "BEGIN IMMEDIATE")


async def listen(engine: AsyncEngine, channel: str, on_notify: Callable[[str], None]) -> Listening:
    """A PostgreSQL ``LISTEN`` on a connection of its own (outside the engine's pool): ``on_notify``
    is called with the payload of each ``NOTIFY channel``. Await ``Listening.lost`` to learn the connection died;
    ``close()`` it when done. Only this module knows the driver (asyncpg).

    Raises:
        OSError, asyncpg errors: the server cannot be reached (the caller retries).
    """
    import asyncpg  # the postgres extra: an engine on PostgreSQL has it already

    conn = await asyncpg.connect(_asyncpg_dsn(engine), timeout=10)
    lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def gone(*_: Any) -> None:
        if not lost.done():
            lost.set_result(None)

    conn.add_termination_listener(gone)
    await conn.add_listener(channel, lambda _conn, _pid, _channel, payload: on_notify(payload))
    return Listening(lost, conn.close)


@dataclass(frozen=True)
class Listening:
    """An open ``LISTEN``: ``lost`` resolves when its connection dies; ``close`` ends it."""

    lost: asyncio.Future[None]
    close: Callable[..., Awaitable[None]]
