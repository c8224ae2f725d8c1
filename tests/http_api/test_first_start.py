"""Starting on a database: servers started together, ``migrate``, and a schema newer than the code.

Four ``graph-runtime serve`` processes started at the same instant on an empty database must all
come up with exactly one first admin key between them (the schema upgrade and the check-and-create
of that key run one process at a time). Each PostgreSQL test creates and drops its own database.
"""

from __future__ import annotations

import asyncio
import secrets
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

import storage
from storage import engine as storage_engine
from storage import migrations
from tests import pg
from tests.processes import ROOT, SAMPLE_FLOWS, ServerProcess, free_port, run_cli_concurrently, sample_flow_ids, sqlite_url

FIRST_RELEASE_SQLITE = ROOT / "tests" / "storage" / "first_release_sqlite.sql"
HEAD = migrations.head()  # the code's schema revision


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database with nothing in it: a new SQLite file, or a new PostgreSQL database (dropped after)."""
    if request.param == "sqlite":
        yield sqlite_url(tmp_path / "graph_runtime.db")
        return
    user, reason = asyncio.run(pg.find_user())
    if user is None:
        pytest.skip(f"PostgreSQL is not reachable at {pg.PG_HOST} ({reason})")
    url = f"postgresql+asyncpg://{user}@{pg.PG_HOST}/gr_test_{secrets.token_hex(6)}"
    asyncio.run(pg.admin(user, f'CREATE DATABASE "{url.rsplit("/", 1)[1]}"'))
    try:
        yield url
    finally:
        asyncio.run(pg.drop_database(url))


async def create_schema(url: str) -> None:
    engine = storage.create_engine(url)
    try:
        await storage.create_schema(engine)
    finally:
        await storage.dispose(engine)


async def key_ids(url: str) -> list[str]:
    engine = storage.create_engine(url)
    try:
        return [key.id for key in await storage.Repository(engine).list_keys()]
    finally:
        await storage.dispose(engine)


def test_four_servers_started_together_on_an_empty_database_make_one_first_key(
        empty_url: str, tmp_path: Path) -> None:
    servers = [ServerProcess(["--db", empty_url, "--flows", str(SAMPLE_FLOWS)], cwd=tmp_path, port=free_port())
               for _ in range(4)]
    try:
        for server in servers:
            server.wait_ready()
        printed = [token for server in servers for token in server.keys_printed]
        assert len(printed) == 1, "\n".join(server.describe() for server in servers)
        assert len(asyncio.run(key_ids(empty_url))) == 1
        for server in servers:  # the one key opens every server; every server loaded the flows
            status, body = server.request("GET", "/api/v1/flows", token=printed[0])
            assert status == 200 and {flow["id"] for flow in body["flows"]} == sample_flow_ids(), (status, body)
    finally:
        for server in servers:
            server.kill()
    assert not any("Traceback" in server.stderr for server in servers)


@pytest.fixture
async def engines(empty_url: str) -> AsyncIterator[list[AsyncEngine]]:
    """Six engines on the database, as six processes would have, with the schema created."""
    made = [storage.create_engine(empty_url) for _ in range(6)]
    try:
        await storage.create_schema(made[0])
        yield made
    finally:
        for engine in made:
            await storage.dispose(engine)


async def test_only_one_of_several_first_key_attempts_at_once_creates_a_key(
        engines: list[AsyncEngine], empty_url: str) -> None:
    created = await asyncio.gather(*(
        storage_engine.create_first_key(engine, f"k{i}", "first-admin", "admin", "hash")
        for i, engine in enumerate(engines)))

    assert sorted(created) == [False] * 5 + [True]
    assert await key_ids(empty_url) == [f"k{created.index(True)}"]


def test_migrate_upgrades_and_check_says_when_an_upgrade_is_due(tmp_path: Path) -> None:
    new, old = sqlite_url(tmp_path / "new.db"), sqlite_url(tmp_path / "old.db")
    with sqlite3.connect(tmp_path / "old.db") as conn:
        conn.executescript(FIRST_RELEASE_SQLITE.read_text(encoding="utf-8"))

    def migrate(*args: str, on: tuple[str, ...] = (new, old)) -> list[tuple[int, str]]:
        done = run_cli_concurrently([(["migrate", *args, "--db", url], tmp_path) for url in on])
        assert not any("Traceback" in d.stderr for d in done), [d.stderr for d in done]
        return [(d.returncode, d.stdout.strip()) for d in done]

    due = " (upgrade due: graph-runtime migrate)"
    assert migrate("--check") == [(1, f"schema: none -> {HEAD}{due}"), (1, f"schema: 0001 -> {HEAD}{due}")]
    assert migrate() == [(0, f"schema: none -> {HEAD} (upgraded)"), (0, f"schema: 0001 -> {HEAD} (upgraded)")]
    assert migrate("--check", on=(old,)) == [(0, f"schema: {HEAD} (current)")]
    assert len(asyncio.run(key_ids(old))) == 1  # the old release's key is still there


def test_a_database_newer_than_the_code_is_refused_at_start_naming_both_versions(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "newer.db")
    asyncio.run(create_schema(url))
    with sqlite3.connect(tmp_path / "newer.db") as conn:
        conn.execute("UPDATE alembic_version SET version_num = '0099'")

    done = run_cli_concurrently([(["serve", "--db", url, "--port", str(free_port())], tmp_path),
                                 (["migrate", "--check", "--db", url], tmp_path)])

    for refused in done:
        assert refused.returncode == 1, (refused.stdout, refused.stderr)
        assert f"error: the database's schema is at version 0099, which this graph-runtime does not know (it knows " \
               f"up to {HEAD})" in refused.stderr
        assert "Traceback" not in refused.stderr
