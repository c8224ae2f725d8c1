"""Repository fixtures: a real SQLite file per test, and the same tests again on PostgreSQL.

SQLite: the schema is created once in a template file that each test copies (milliseconds).
PostgreSQL: one database ``gr_test_<hex>`` per session, created and dropped by the fixture,
emptied before each test; skipped with the reason when no server answers on 127.0.0.1:5432.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import storage
from graph_runtime import flow as flows
from graph_runtime.flow import Flow
from graph_runtime.models import TaskRequest
from storage.repository import Repository, WorkerStore
from tests import pg

TABLES = "node_run, task, flow_revision, flow, api_key"


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("storage-template") / "template.db"
    asyncio.run(pg.create_schema(f"sqlite+aiosqlite:///{path}"))
    return path


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    user, reason = asyncio.run(pg.find_user())
    if user is None:
        pytest.skip(f"PostgreSQL is not reachable at {pg.PG_HOST} as {' or '.join(pg.PG_USERS)} ({reason})")
    url = asyncio.run(pg.create_database(user))
    try:
        yield url
    finally:
        asyncio.run(pg.drop_database(url))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database with the schema and no rows: a fresh SQLite file, or the emptied PG database."""
    if request.param == "postgres":
        return request.getfixturevalue("postgres_url")
    target = tmp_path / "graph_runtime.db"
    shutil.copy(request.getfixturevalue("sqlite_template"), target)
    return f"sqlite+aiosqlite:///{target}"


@pytest.fixture
async def make_repository(database_url: str) -> AsyncIterator[Callable[..., Any]]:
    """Builds repositories on the test's database, each on its own engine (as separate processes);
    ``make(WorkerStore)`` builds only the executor's side."""
    engines = []

    def make(kind: type[WorkerStore] = Repository) -> Any:
        engine = storage.create_engine(database_url)
        engines.append(engine)
        return kind(engine)

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
def repo(make_repository: Callable[..., Repository]) -> Repository:
    return make_repository()


@pytest.fixture
def store(make_repository: Callable[..., WorkerStore]) -> WorkerStore:
    """The store a worker uses (graph_runtime.ports.TaskStore), alone, on the test's database:
    the contract tests run on it, on SQLite and on PostgreSQL."""
    return make_repository(WorkerStore)


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
