"""The hot path of each engine (storage.hot_path): chosen once per repository, the heartbeat's own
connections on it too, and on PostgreSQL (asyncpg, no SQLAlchemy) a lost or refused connection
is StoreUnavailable, after which the path reconnects by itself."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import asyncpg
import pytest

import storage
from graph_runtime import errors
from graph_runtime.flow import Flow
from graph_runtime.models import Fenced, NodeRun, NodeStatus
from storage.engine import PgPool
from storage.pg_hot_path import PgHotPath
from storage.repository import Repository
from storage.repository_leases import lease_renewer
from storage.sqlite_hot_path import SqliteHotPath
from tests.storage.conftest import make_request

SavedFlow = Callable[..., Awaitable[Flow]]


def on_postgres(repo: Repository) -> bool:
    return repo.engine.dialect.name == "postgresql"


async def test_each_engine_has_one_hot_path(repo: Repository) -> None:
    expected = PgHotPath if on_postgres(repo) else SqliteHotPath
    assert type(repo._hot) is expected


async def test_the_heartbeats_own_connections_renew_on_the_hot_path(repo: Repository, saved_flow: SavedFlow) -> None:
    await saved_flow()
    task, _ = await repo.create_task("demo", 1, make_request())
    await repo.claim_task(task.id, "w1", lease_s=0)
    async with lease_renewer(repo.engine)() as renewer:
        assert type(renewer._hot) is type(repo._hot)
        assert await renewer.renew_leases("w1", [task.id], 60) == {task.id}
        assert await renewer.renew_leases("w2", [task.id], 60) == set()
    assert await repo.requeue_expired() == 0, "renewed"


async def test_a_duplicate_run_in_one_batch_leaves_the_last(repo: Repository, saved_flow: SavedFlow) -> None:
    await saved_flow()
    task, _ = await repo.create_task("demo", 1, make_request(), node_ids=["start"])
    claimed = await repo.claim_task(task.id, "w1", 60)
    assert claimed is not None and claimed.lease is not None
    runs = [(task.id, NodeRun("start", NodeStatus.RUNNING)), (task.id, NodeRun("start", NodeStatus.SUCCEEDED))]
    assert await repo.save_node_runs_many(runs, {task.id: claimed.lease}) == Fenced()
    assert (await repo.get_task(task.id)).nodes["start"].status is NodeStatus.SUCCEEDED


@pytest.mark.postgres
async def test_postgres_connections_lost_are_unavailable_then_come_back(repo: Repository, saved_flow: SavedFlow) -> None:
    if not on_postgres(repo):
        pytest.skip("PostgreSQL's hot path")
    await saved_flow()
    task, _ = await repo.create_task("demo", 1, make_request())
    assert (await repo.get_task(task.id)).id == task.id  # the pool is open
    # What a server restart does to every open connection.
    admin = await asyncpg.connect(repo.engine.url.set(drivername="postgresql").render_as_string(hide_password=False))
    try:
        killed = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid() AND application_name = 'graph-runtime'")
    finally:
        await admin.close()
    assert killed >= 1
    outcomes: list[int | str] = []
    for _ in range(3):
        try:
            outcomes.append((await repo.get_task(task.id)).id)
        except errors.StoreUnavailable as exc:
            assert "unavailable" in str(exc)
            outcomes.append("unavailable")
    assert outcomes[-1] == task.id and outcomes.count("unavailable") <= 1, outcomes
    claimed = await repo.claim_tasks("w1", 60, 5)
    assert [t.id for t in claimed] == [task.id]


@pytest.mark.postgres
async def test_an_unreachable_postgres_is_unavailable(repo: Repository) -> None:
    if not on_postgres(repo):
        pytest.skip("PostgreSQL's hot path")
    engine = storage.create_engine(repo.engine.url.set(port=1).render_as_string(hide_password=False))
    try:
        away = Repository(engine)
        for attempt in (away.get_task(1), away.claim_tasks("w1", 60, 5), away.is_cancel_requested(1)):
            with pytest.raises(errors.StoreUnavailable):
                await attempt
    finally:
        await storage.dispose(engine)


@pytest.mark.postgres
async def test_postgres_statements_share_one_kept_connection_never_left_in_a_transaction(postgres_url: str) -> None:
    """The hot path's statements, one after another, run on one connection kept between uses (a
    worker's chain asks for one 15 times); two at once get two. A block that raises (a lost
    connection) does not hand its connection to the next: its transaction is rolled back."""
    dsn = postgres_url.replace("postgresql+asyncpg://", "postgresql://", 1)
    pool = PgPool(dsn)
    try:
        async with pool.connection() as conn:
            first = await conn.fetchval("SELECT pg_backend_pid()")
            await conn.execute("CREATE TABLE IF NOT EXISTS kept_probe (n int)")
        async with pool.connection() as conn:
            assert await conn.fetchval("SELECT pg_backend_pid()") == first
            async with pool.connection() as other:  # the kept one is busy: the pool's
                assert await other.fetchval("SELECT pg_backend_pid()") != first
        with pytest.raises(errors.StoreUnavailable):
            async with pool.transaction() as conn:
                await conn.execute("INSERT INTO kept_probe VALUES (1)")
                raise asyncpg.ConnectionDoesNotExistError("the server went away")  # as a lost connection raises
        async with pool.connection() as conn:
            assert not conn.is_in_transaction()
            assert await conn.fetchval("SELECT count(*) FROM kept_probe") == 0  # rolled back
            async with pool.connection() as other:  # the one given back is the pool's again, usable
                assert not other.is_in_transaction() and await other.fetchval("SELECT 1") == 1
            await conn.execute("DROP TABLE kept_probe")
            kept = await conn.fetchval("SELECT pg_backend_pid()")
        # The server closes the kept connection while it is idle (a restart, an idle timeout): the
        # next block gets a working one, no error.
        admin = await asyncpg.connect(dsn)
        try:
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", kept)
        finally:
            await admin.close()
        await asyncio.sleep(0.2)  # the client reads the connection's end
        async with pool.connection() as conn:
            assert await conn.fetchval("SELECT pg_backend_pid()") != kept
    finally:
        await pool.close()
