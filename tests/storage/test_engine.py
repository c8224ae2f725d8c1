"""Engine creation: URLs, drivers, SQLite settings, and errors that name the fix."""

from __future__ import annotations

import asyncio
import importlib.util
import re
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import storage
from graph_runtime import errors
from storage.errors import translate
from storage.repository import Repository


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mysql://user@host/db", "unsupported database 'mysql'"),
        ("sqlite+pysqlite:///x.db", "use sqlite+aiosqlite://"),
        ("postgresql+psycopg2://u@h/db", "use postgresql+asyncpg://"),
        ("not a url", "not a database URL"),
    ],
)
def test_unsupported_urls_say_what_to_use(url: str, expected: str) -> None:
    with pytest.raises(storage.DatabaseUrlError, match=re.escape(expected)) as caught:
        storage.create_engine(url)
    assert caught.value.code == "invalid_database_url"


def test_a_missing_driver_names_the_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, *args: Any) -> Any:
        return None if name == "asyncpg" else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(storage.DatabaseUrlError, match=r"pip install 'graph-runtime\[postgres\]'"):
        storage.create_engine("postgresql+asyncpg://postgres@localhost/db")


async def test_urls_without_a_driver_get_ours() -> None:
    for url, driver in (("postgres://u@h/db", "postgresql+asyncpg"), ("sqlite:///x.db", "sqlite+aiosqlite")):
        engine = storage.create_engine(url)
        assert engine.url.drivername == driver
        await storage.dispose(engine)


async def test_sqlite_connections_are_configured(tmp_path: Path) -> None:
    engine = storage.create_engine(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
    try:
        async with engine.connect() as conn:
            pragmas = {
                name: (await conn.exec_driver_sql(f"PRAGMA {name}")).scalar()
                for name in ("journal_mode", "synchronous", "busy_timeout", "foreign_keys")
            }
    finally:
        await storage.dispose(engine)
    assert pragmas == {"journal_mode": "wal", "synchronous": 1, "busy_timeout": 5000, "foreign_keys": 1}


async def test_create_schema_is_idempotent(tmp_path: Path) -> None:
    engine = storage.create_engine(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
    try:
        await storage.create_schema(engine)
        await storage.create_schema(engine)
        async with engine.connect() as conn:
            names = await conn.run_sync(lambda sync: sa.inspect(sync).get_table_names())
    finally:
        await storage.dispose(engine)
    assert set(names) >= {"flow", "flow_revision", "task", "node_run", "api_key"}


async def test_ping_answers_when_the_database_does(repo: Repository) -> None:
    await repo.ping()


async def test_an_unreachable_postgres_is_store_unavailable() -> None:
    engine = storage.create_engine("postgresql+asyncpg://postgres@127.0.0.1:1/nope")
    try:
        with pytest.raises(errors.StoreUnavailable):
            await Repository(engine).ping()
    finally:
        await storage.dispose(engine)


async def test_an_unopenable_sqlite_file_is_store_unavailable(tmp_path: Path) -> None:
    already = {t.ident for t in threading.enumerate()}  # other tests' workers are not ours to wait for
    engine = storage.create_engine(f"sqlite+aiosqlite:///{tmp_path / 'missing-dir' / 'x.db'}")
    try:
        with pytest.raises(errors.StoreUnavailable):
            await Repository(engine).count_tasks()
    finally:
        await storage.dispose(engine)
    # aiosqlite stops a worker that failed to connect without awaiting it; let it finish
    # while this test's event loop still runs.
    deadline = time.monotonic() + 5
    while any("_connection_worker_thread" in t.name and t.ident not in already for t in threading.enumerate()):
        assert time.monotonic() < deadline, "aiosqlite worker thread did not stop"
        await asyncio.sleep(0.005)


async def test_concurrent_writers_in_two_processes_do_not_hit_database_is_locked(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"
    engines = [storage.create_engine(url) for _ in range(2)]
    try:
        await storage.create_schema(engines[0])
        repos = [Repository(engine) for engine in engines]
        await asyncio.gather(*(repos[i % 2].insert_key(f"k{i}", "n", "execute", "h") for i in range(60)))
        assert await repos[1].count_keys() == 60
    finally:
        for engine in engines:
            await storage.dispose(engine)


async def test_a_database_without_the_schema_is_a_storage_error_not_a_retry(tmp_path: Path) -> None:
    engine = storage.create_engine(f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}")
    try:
        with pytest.raises(storage.StorageError, match="is the schema created"):
            await Repository(engine).count_tasks()
    finally:
        await storage.dispose(engine)


def test_a_locked_database_is_store_unavailable() -> None:
    # A real lock would cost busy_timeout (5 s) per test; the translation is what matters.
    locked = sa.exc.OperationalError("BEGIN IMMEDIATE", {}, sqlite3.OperationalError("database is locked"))
    translated = translate(locked)
    assert isinstance(translated, errors.StoreUnavailable) and "database is locked" in translated.message
