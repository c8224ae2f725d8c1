"""The versioned schema: an old release's database upgrades with everything kept, a new one is the
tables' metadata, a newer one is refused. Each test gets an empty database of its own (SQLite file,
or a PostgreSQL database it creates and drops).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sqlite3
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

import storage
from graph_runtime.events import EventBatch, EventKind
from graph_runtime.models import TaskRequest, TaskStatus
from storage import engine as engines
from storage import migrations, tables
from storage.errors import SchemaTooNew, SchemaUnknown
from storage.repository import Repository
from storage.task_events import TaskEventLog
from tests import pg

HERE = Path(__file__).parent
HEAD = migrations.head()  # the code's schema revision
# The one key each first-release fixture holds (made by `keys create ci-runner` on each engine).
FIXTURE_KEY = {"sqlite": "k74ac510cfaccc10e", "postgresql": "k5edef3bf50155c84"}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A database with nothing in it: a new SQLite file, or a new PostgreSQL database (dropped after)."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'graph_runtime.db'}"
        return
    user, reason = await pg.find_user()
    if user is None:
        pytest.skip(f"PostgreSQL is not reachable at {pg.PG_HOST} ({reason})")
    url = f"postgresql+asyncpg://{user}@{pg.PG_HOST}/gr_test_{secrets.token_hex(6)}"
    await pg.admin(user, f'CREATE DATABASE "{url.rsplit("/", 1)[1]}"')
    try:
        yield url
    finally:
        await pg.drop_database(url)


@pytest.fixture
async def engine(empty_url: str) -> AsyncIterator[Any]:
    created = storage.create_engine(empty_url)
    try:
        yield created
    finally:
        await storage.dispose(created)


async def load_first_release(url: str) -> None:
    """Write the fixture dumped from the release before versioning (schema, a flow, a key, two tasks)."""
    if url.startswith("sqlite"):
        script = (HERE / "first_release_sqlite.sql").read_text(encoding="utf-8")
        with sqlite3.connect(url.split("///", 1)[1]) as conn:
            conn.executescript(script)
        return
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"))
    try:
        await conn.execute((HERE / "first_release_postgres.sql").read_text(encoding="utf-8"))
    finally:
        await conn.close()


async def run_sync(engine: Any, work: Callable[[sa.Connection], Any]) -> Any:
    async with engine.begin() as conn:
        return await conn.run_sync(work)


def drop_every_table(conn: sa.Connection) -> None:
    for table in ("node_run", "task", "flow_revision", "flow", "api_key"):  # referring tables first
        conn.exec_driver_sql(f"DROP TABLE {table}")


def shape(conn: sa.Connection) -> dict[str, Any]:
    """Every table's columns, keys, uniques and indexes as the database reports them (not alembic's)."""
    inspector = sa.inspect(conn)
    found = {}
    for table in sorted(set(inspector.get_table_names()) - {"alembic_version"}):
        found[table] = {
            "columns": [(c["name"], str(c["type"]), c["nullable"], c["default"]) for c in inspector.get_columns(table)],
            "pk": inspector.get_pk_constraint(table)["constrained_columns"],
            "fks": sorted((fk["constrained_columns"], fk["referred_table"], fk["referred_columns"],
                           sorted(fk["options"].items())) for fk in inspector.get_foreign_keys(table)),
            "uniques": sorted((u["name"], u["column_names"]) for u in inspector.get_unique_constraints(table)),
            "indexes": sorted((i["name"], i["column_names"], i["unique"]) for i in inspector.get_indexes(table)),
        }
    if conn.dialect.name == "sqlite":  # AUTOINCREMENT is only in the CREATE TABLE text
        found["task"]["sql"] = conn.exec_driver_sql("SELECT sql FROM sqlite_master WHERE name = 'task'").scalar()
    return found


async def test_a_first_release_database_upgrades_with_every_flow_key_and_task(engine: Any, empty_url: str) -> None:
    await load_first_release(empty_url)

    assert await storage.create_schema(engine) == migrations.SchemaVersions("0001", HEAD)

    repo = Repository(engine)
    [(flow, revision, _)] = await repo.list_flows()
    assert (flow.id, flow.name, revision, [n.id for n in flow.nodes]) == ("greet", "Greet", 1, ["start", "end"])
    [key] = await repo.list_keys()
    assert (key.id, key.name, key.scope, key.revoked) == (FIXTURE_KEY[engine.dialect.name], "ci-runner", "execute", False)
    for task_id, name in ((1, "ada"), (2, "world")):
        task = await repo.get_task(task_id)
        assert (task.status, task.result, task.claims, task.interruptions) == (
            TaskStatus.SUCCEEDED, {"request": {"name": name}}, 1, 0)
        assert [run.node_id for run in task.nodes.values()] == ["start", "end"]
        assert task.nodes["end"].output == {"request": {"name": name}}
    assert await run_sync(engine, lambda c: c.execute(sa.select(tables.task.c.interruptions)).scalars().all()) == [0, 0]
    # New tasks carry on after the old ones (the id sequence survived).
    request = TaskRequest(start_node_id="start", end_node_id="end", result_node_id="end")
    new, _ = await repo.create_task("greet", 1, request, node_ids=["start", "end"])
    assert new.id == 3
    assert await storage.create_schema(engine) == migrations.SchemaVersions(HEAD, HEAD)


async def test_a_0006_database_upgrades_keeping_its_child_tasks_and_map_counts(engine: Any, empty_url: str) -> None:
    await load_first_release(empty_url)
    await run_sync(engine, lambda c: command.stamp(migrations.config(c), "0001"))
    await run_sync(engine, lambda c: command.upgrade(migrations.config(c), "0006"))
    await run_sync(engine, lambda c: c.exec_driver_sql(
        "UPDATE node_run SET items = '{\"succeeded\": 3}' WHERE task_id = 1 AND node_id = 'end'"))
    await run_sync(engine, lambda c: c.exec_driver_sql("UPDATE task SET parent_id = 1 WHERE id = 2"))

    assert await storage.create_schema(engine) == migrations.SchemaVersions("0006", HEAD)

    repo = Repository(engine)
    first, second = await repo.get_task(1), await repo.get_task(2)
    assert first.nodes["end"].items == {"succeeded": 3} and first.nodes["end"].output == {"request": {"name": "ada"}}
    assert (second.parent_id, second.status, second.result) == (1, TaskStatus.SUCCEEDED, {"request": {"name": "world"}})
    assert all(run.waiting_for_pool is None for task in (first, second) for run in task.nodes.values())
    assert await run_sync(engine, lambda c: c.execute(sa.select(tables.task.c.pool)).scalars().all()) == [None, None]
    request = TaskRequest(start_node_id="start", end_node_id="end", result_node_id="end")
    new, _ = await repo.create_task("greet", 1, request)
    assert new.id == 3
    assert [t.id for t in await repo.claim_tasks("w1", 60, 5, frozenset({"gpu"}))] == [3]


async def test_a_0010_database_upgrades_keeping_every_task_event_and_downgrades_back(engine: Any, empty_url: str) -> None:
    await load_first_release(empty_url)
    await run_sync(engine, lambda c: command.stamp(migrations.config(c), "0001"))
    await run_sync(engine, lambda c: command.upgrade(migrations.config(c), "0010"))
    moment = datetime(2026, 11, 30, 10, 0, 0, 123456, tzinfo=UTC)
    at: Any = "2026-11-30 10:00:00.123456" if engine.dialect.name == "sqlite" else moment  # as each driver writes it
    written = [(1, 1, "task", '{"id": 1, "status_name": "running"}', False),
               (1, 2, "node", '{"node_id": "start", "status": "succeeded"}', False),
               (1, 3, "task", '{"id": 1, "status_name": "succeeded"}', True),
               (2, 1, "log", '{"node_id": "end", "message": "hi"}', False)]
    for task_id, seq, kind, data, final in written:
        await run_sync(engine, lambda c, row=(task_id, seq, kind, data, final): c.execute(sa.text(
            "INSERT INTO task_event (task_id, seq, kind, data, at, final) VALUES (:t, :s, :k, :d, :at, :f)"),
            {"t": row[0], "s": row[1], "k": row[2], "d": row[3], "at": at, "f": row[4]}))

    assert await storage.create_schema(engine) == migrations.SchemaVersions("0010", HEAD)

    log = TaskEventLog(engine)
    found = await log.since({1: 0, 2: 0})
    assert [(e.task_id, e.seq, e.kind.value, e.data, e.final) for e in found] == [
        (t, s, k, json.loads(d), f) for t, s, k, d, f in written]
    assert [e.seq for e in await log.since({1: 1})] == [2, 3] and await log.last_seq(1) == 3
    # A new batch continues after them, and a resumed read finds it.
    await Repository(engine).save_node_runs_many([], {}, [
        EventBatch(2, None, [(2, EventKind.LOG, {"node_id": "end", "message": "again"})])])
    assert [e.data["message"] for e in await log.since({2: 0})] == ["hi", "again"]

    await run_sync(engine, lambda c: command.downgrade(migrations.config(c), "0010"))
    back = await run_sync(engine, lambda c: c.exec_driver_sql(
        "SELECT task_id, seq, kind, final, data, at FROM task_event ORDER BY task_id, seq").fetchall())
    assert [tuple(row[:4]) for row in back] == [(t, s, k, f) for t, s, k, _, f in written] + [(2, 2, "log", False)]
    # Each event's data comes back; the new batch's event, which has no time, gets the downgrade's.
    data = [row[4] if isinstance(row[4], dict) else json.loads(row[4]) for row in back]
    assert data == [json.loads(d) for *_, d, _ in written] + [{"node_id": "end", "message": "again"}]
    assert all(row[5] for row in back)


async def test_revision_1_is_exactly_what_the_first_release_created(engine: Any, empty_url: str) -> None:
    await load_first_release(empty_url)
    released = await run_sync(engine, shape)
    await run_sync(engine, drop_every_table)

    await run_sync(engine, lambda c: command.upgrade(migrations.config(c), "0001"))
    assert await run_sync(engine, shape) == released
    # And back: the latest revision's downgrade leaves the first release's schema again.
    await storage.create_schema(engine)
    await run_sync(engine, lambda c: command.downgrade(migrations.config(c), "0001"))
    assert await run_sync(engine, shape) == released


async def test_a_new_database_gets_every_revision_and_matches_the_tables(engine: Any) -> None:
    assert await storage.create_schema(engine) == migrations.SchemaVersions(None, HEAD)

    def differences(conn: sa.Connection) -> list[Any]:
        context = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
        return list(compare_metadata(context, tables.metadata))

    assert await run_sync(engine, differences) == []
    assert await engines.schema_versions(engine) == migrations.SchemaVersions(HEAD, HEAD)
    assert await storage.create_schema(engine) == migrations.SchemaVersions(HEAD, HEAD)


async def test_a_database_newer_than_the_code_is_refused_naming_both_versions(engine: Any) -> None:
    await storage.create_schema(engine)
    await run_sync(engine, lambda c: c.execute(sa.text("UPDATE alembic_version SET version_num = '0099'")))

    for attempt in (storage.create_schema, engines.schema_versions):
        with pytest.raises(SchemaTooNew, match=f"at version 0099.*knows up to {HEAD}") as caught:
            await attempt(engine)
        assert caught.value.code == "schema_too_new"


async def test_tables_no_release_made_are_refused_not_stamped(engine: Any) -> None:
    await run_sync(engine, lambda c: c.exec_driver_sql("CREATE TABLE flow (id VARCHAR(64) PRIMARY KEY)"))

    with pytest.raises(SchemaUnknown, match=r"missing table api_key, table flow_revision, .*, flow\.created"):
        await storage.create_schema(engine)
    assert await run_sync(engine, lambda c: sa.inspect(c).get_table_names()) == ["flow"]


async def test_processes_upgrading_at_once_run_each_revision_once(empty_url: str) -> None:
    racing = [storage.create_engine(empty_url) for _ in range(4)]
    try:
        found = await asyncio.gather(*(storage.create_schema(one) for one in racing))
    finally:
        for one in racing:
            await storage.dispose(one)
    assert sorted(found, key=lambda v: v.database or "") == [migrations.SchemaVersions(None, HEAD)] + [
        migrations.SchemaVersions(HEAD, HEAD)] * 3
