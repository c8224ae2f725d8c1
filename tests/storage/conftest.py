"""Repository fixtures: a real SQLite file per test, and the same tests again on PostgreSQL.

SQLite: the schema is created once in a template file that each test copies (milliseconds).
PostgreSQL: one database ``gr_test_<hex>`` per session, created and dropped by the fixture,
emptied before each test; skipped with the reason when no server answers on 127.0.0.1:5432.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

import storage
from graph_runtime import flow as flows
from graph_runtime.flow import Flow
from graph_runtime.models import TaskRequest
from storage.repository import Repository

PG_HOST = "127.0.0.1:5432"
PG_USERS = ("postgres", "root")
TABLES = "node_run, task, flow_revision, flow, api_key"


async def _create_schema(url: str) -> None:
    engine = storage.create_engine(url)
    try:
        await storage.create_schema(engine)
    finally:
        await storage.dispose(engine)


async def _find_pg_user() -> tuple[str | None, str]:
    """The first user that can log in with trust auth, or None and why not."""
    reason = "no user tried"
    for user in PG_USERS:
        try:
            conn = await asyncpg.connect(f"postgresql://{user}@{PG_HOST}/postgres", timeout=2)
        except (OSError, asyncpg.PostgresError) as exc:  # TimeoutError is an OSError
            reason = f"{type(exc).__name__}: {exc}"
            continue
        await conn.close()
        return user, ""
    return None, reason


async def _admin(user: str, sql: str) -> None:
    conn = await asyncpg.connect(f"postgresql://{user}@{PG_HOST}/postgres", timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("storage-template") / "template.db"
    asyncio.run(_create_schema(f"sqlite+aiosqlite:///{path}"))
    return path


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    user, reason = asyncio.run(_find_pg_user())
    if user is None:
        pytest.skip(f"PostgreSQL is not reachable at {PG_HOST} as {' or '.join(PG_USERS)} ({reason})")
    name = f"gr_test_{secrets.token_hex(6)}"
    asyncio.run(_admin(user, f'CREATE DATABASE "{name}"'))
    try:
        url = f"postgresql+asyncpg://{user}@{PG_HOST}/{name}"
        asyncio.run(_create_schema(url))
        yield url
    finally:
        asyncio.run(_admin(user, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database with the schema and no rows: a fresh SQLite file, or the emptied PG database."""
    if request.param == "postgres":
        return request.getfixturevalue("postgres_url")
    target = tmp_path / "graph_runtime.db"
    shutil.copy(request.getfixturevalue("sqlite_template"), target)
    return f"sqlite+aiosqlite:///{target}"


@pytest.fixture
async def make_repository(database_url: str) -> AsyncIterator[Callable[[], Repository]]:
    """Builds repositories on the test's database, each on its own engine (as separate processes)."""
    engines = []

    def make() -> Repository:
        engine = storage.create_engine(database_url)
        engines.append(engine)
        return Repository(engine)

    first = make()
    if first.engine.dialect.name == "postgresql":
        async with first.engine.begin() as conn:
            await conn.exec_driver_sql(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE")
    try:
        yield make
    finally:
        for engine in engines:
            await storage.dispose(engine)


@pytest.fixture
def repo(make_repository: Callable[[], Repository]) -> Repository:
    return make_repository()


def make_flow(flow_id: str = "demo", **extra: Any) -> Flow:
    """A shape-valid flow (node types are not checked by ``flow.parse``)."""
    nodes = [{"id": "start", "type": "start"}, {"id": "end", "type": "end"}]
    edges = [{"from": "start", "to": "end", "input": "request"}]
    return flows.parse({"id": flow_id, "nodes": nodes, "edges": edges, **extra})


def make_request(**settings: Any) -> TaskRequest:
    return TaskRequest(
        start_node_id="start",
        end_node_id="end",
        result_node_id="end",
        node_settings={"start": {"data": settings}} if settings else {},
    )


@pytest.fixture
def saved_flow(repo: Repository) -> Callable[..., Awaitable[Flow]]:
    async def save(flow_id: str = "demo") -> Flow:
        flow = make_flow(flow_id)
        await repo.save_flow(flow)
        return flow

    return save
