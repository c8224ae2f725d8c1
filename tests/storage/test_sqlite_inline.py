"""SQLite's inline fast path (storage.sqlite_inline): same rows as SQLAlchemy, never blocks the loop.

Every test runs on a real SQLite file only (``database_url`` is overridden: the inline path does not
exist on PostgreSQL). Another process holding the lock is a plain ``sqlite3`` connection in the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sqlite3
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa

import storage
from graph_runtime import errors
from graph_runtime.flow import Flow
from graph_runtime.models import NodeRun, NodeStatus, RunError, TaskOutcome, TaskStatus
from nodes import codec
from storage import engine as engines
from storage import rows, tables
from storage.repository import Repository
from storage.sqlite_inline import _CHECKPOINT_EVERY, THREAD_ABOVE_BYTES, SqliteInline
from tests.storage.conftest import make_request
from tests.support import eventually

SavedFlow = Callable[..., Awaitable[Flow]]
T0 = datetime(2026, 11, 23, 21, 14, 34, 800001, tzinfo=UTC)
PARIS = timezone(timedelta(hours=1))
TASK_COLUMNS = "status, started, finished, result, execution_time, execution_cost, error, claims, lease_owner, lease_expires"


@pytest.fixture
def database_url(sqlite_template: Path, tmp_path: Path) -> str:
    """SQLite only (overrides the conftest's SQLite + PostgreSQL parameters)."""
    target = tmp_path / "graph_runtime.db"
    shutil.copy(sqlite_template, target)
    return f"sqlite+aiosqlite:///{target}"


def db_file(repo: Repository) -> str:
    assert repo.engine.url.database is not None and engines.inline(repo.engine) is not None
    return repo.engine.url.database


def full_run(node_id: str, started: datetime, cost: float = 0.1 + 0.2) -> NodeRun:
    """A node run with every field populated: unicode, nested JSON, floats, microseconds."""
    error = RunError("node_failed", "échec ✗ 猫", node_id)
    output = {"z": {"list": [1, 2.5, None, True, "日本語"], "empty": {}}, "a": 2**53, "f": 1e-300}
    return NodeRun(node_id, NodeStatus.FAILED, started, started + timedelta(seconds=1, microseconds=7), 1.000007, cost, 3,
                   error, output, waiting_for_pool="gpu")


def sqlalchemy_values(task_id: int, run: NodeRun) -> dict[str, object]:
    """A node run's column values as a SQLAlchemy insert takes them (JSON columns as objects)."""
    values = dict(zip(rows.RUN_COLUMNS, rows.DECODED.run_params(task_id, run), strict=True))
    return {**values, "error": run.error.as_dict() if run.error else None, "output": run.output, "items": run.items}


def raw(path: str, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    """What is really stored, read with a plain sqlite3 connection (as another process would)."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return conn.execute(sql, params).fetchall()


def typed(columns: str) -> str:  # each column's storage class and value
    return ", ".join(f"typeof({c}), {c}" for c in columns.split(", "))


# -- the two paths store and read the same values ------------------------------------------------


async def test_inline_writes_read_back_identically_through_sqlalchemy(repo: Repository, saved_flow: SavedFlow) -> None:
    await saved_flow()
    task, created = await repo.create_task("demo", 1, make_request(style="ß"), idempotency_key="k", fingerprint="f",
                                           node_ids=["start", "mid", "end"])
    assert created and await repo.claim_next_task("w1") is not None
    zeta, alpha = full_run("zeta", T0.astimezone(PARIS)), full_run("alpha", T0 + timedelta(seconds=2), cost=0.0)
    await repo.save_node_runs(task.id, [alpha, zeta])
    outcome = TaskOutcome(TaskStatus.FAILED, T0.replace(microsecond=0) + timedelta(hours=1), 3600.5, 0.30000000000000004,
                          result={"ü": [1.5, {"b": None}], "a": "✓"}, error=RunError("node_failed", "", "zeta"))
    await repo.finish_task(task.id, outcome, [NodeRun("end", NodeStatus.SKIPPED)])

    inline, (through_sqlalchemy,) = await repo.get_task(task.id), await repo.list_tasks()
    assert inline == through_sqlalchemy
    assert list(inline.nodes) == list(through_sqlalchemy.nodes) == ["zeta", "alpha", "end", "mid", "start"]
    assert inline.nodes["zeta"] == zeta and inline.nodes["alpha"] == alpha
    assert inline.nodes["zeta"].started == T0 and inline.nodes["zeta"].finished == T0 + timedelta(seconds=1, microseconds=7)
    for found in (inline, through_sqlalchemy):
        assert (found.status, found.result, found.error, found.claims) == (TaskStatus.FAILED, outcome.result, outcome.error, 1)
        assert list(found.result) == ["ü", "a"]  # type: ignore[arg-type]
        assert (found.finished, found.execution_time, found.execution_cost) == (outcome.finished, 3600.5, 0.30000000000000004)
        stamps = [found.created, found.started, found.finished] + [r.started for r in found.nodes.values() if r.started]
        assert all(s is not None and s.tzinfo is UTC for s in stamps)


async def test_both_paths_store_the_very_same_bytes(repo: Repository, saved_flow: SavedFlow) -> None:
    await saved_flow()
    inline_id, sqlalchemy_id = [(await repo.create_task("demo", 1, make_request()))[0].id for _ in range(2)]
    runs = [full_run("a", T0.astimezone(PARIS)), full_run("b", T0.replace(microsecond=0)), NodeRun("c")]
    outcome = TaskOutcome(TaskStatus.SUCCEEDED, T0, 2.5, 1, result={"x": "✓", "n": [1, 2.0]})
    await repo.save_node_runs(inline_id, runs)
    await repo.finish_task(inline_id, outcome, [])
    async with engines.writer(repo.engine).begin() as conn:  # what the SQLAlchemy path executes
        await conn.execute(sa.insert(tables.node_run), [sqlalchemy_values(sqlalchemy_id, run) for run in runs])
        await conn.execute(sa.update(tables.task).where(tables.task.c.id == sqlalchemy_id).values(
            status="succeeded", finished=T0, execution_time=2.5, execution_cost=1, result=outcome.result, error=None))

    path, columns = db_file(repo), "node_id, status, started, finished, execution_time, cost, attempts, error, output"
    runs_sql = f"SELECT {typed(columns)} FROM node_run WHERE task_id = ? ORDER BY node_id"
    assert raw(path, runs_sql, (inline_id,)) == raw(path, runs_sql, (sqlalchemy_id,))
    task_sql = f"SELECT {typed(TASK_COLUMNS)} FROM task WHERE id = ?"
    assert raw(path, task_sql, (inline_id,)) == raw(path, task_sql, (sqlalchemy_id,))
    assert raw(path, "SELECT started FROM node_run WHERE node_id = 'a'")[0] == ("2026-11-23 21:14:34.800001",)


async def test_sqlalchemy_writes_read_back_identically_inline(repo: Repository, saved_flow: SavedFlow) -> None:
    await saved_flow()
    queued, running = [(await repo.create_task("demo", 1, make_request(n=n)))[0].id for n in range(2)]
    cancelled = await repo.request_cancel(queued)  # SQLAlchemy: finished, error, execution_cost
    assert await repo.get_task(queued) == cancelled
    await repo.claim_task(running, "w1", lease_s=60)
    runs = [full_run("late", T0 + timedelta(days=1)), full_run("early", T0.astimezone(PARIS))]
    async with engines.writer(repo.engine).begin() as conn:
        await conn.execute(sa.insert(tables.node_run), [sqlalchemy_values(running, run) for run in runs])
    flagged = await repo.request_cancel(running)
    assert await repo.renew_leases("w1", [running], lease_s=60) == {running}
    assert await repo.get_task(running) == flagged and list(flagged.nodes) == ["early", "late"]
    assert await repo.is_cancel_requested(running) and not await repo.is_cancel_requested(queued)

    assert await repo.release_tasks("w1", [running]) == 1  # SQLAlchemy: back in the queue, started NULL
    assert (await repo.get_task(running)).started is None
    resumed = await repo.claim_next_task("w2")  # inline: a second claim comes back with its node runs
    assert resumed is not None and resumed.id == running and resumed.claims == 2 and resumed.nodes == flagged.nodes
    assert resumed == (await repo.list_tasks(status=TaskStatus.RUNNING))[0] == await repo.get_task(running)
    (_, revision, created), = await repo.list_flows()
    assert await repo.get_flow("demo") == (await repo.load_flow("demo", 1), revision, created)
    assert created.tzinfo is UTC


# -- another process holds the write lock --------------------------------------------------------


async def test_a_write_waits_for_another_connections_lock_without_blocking_the_loop(
    repo: Repository, saved_flow: SavedFlow
) -> None:
    await saved_flow()
    task, _ = await repo.create_task("demo", 1, make_request())
    other = sqlite3.connect(db_file(repo), isolation_level=None)
    ticks, at_release = [0], []

    async def ticker() -> None:
        while await asyncio.sleep(0.01, True):
            ticks[0] += 1

    def release() -> None:  # what had happened while the lock was held, then let go
        at_release.append((ticks[0], raw(db_file(repo), "SELECT count(*) FROM node_run")))
        other.execute("COMMIT")

    try:
        other.execute("BEGIN IMMEDIATE")
        asyncio.get_running_loop().call_later(0.3, release)
        ticking = asyncio.ensure_future(ticker())
        started = time.monotonic()
        await repo.save_node_runs(task.id, [NodeRun("start", NodeStatus.RUNNING, T0)])
        waited = time.monotonic() - started
        ticking.cancel()
    finally:
        other.close()
    assert at_release and waited >= 0.25, "the write finished only once the lock was released"
    (ticks_while_locked, rows_while_locked), = at_release
    assert ticks_while_locked >= 5, f"the event loop was blocked while waiting ({ticks_while_locked} ticks in 0.3 s)"
    assert rows_while_locked == [(0,)]
    assert (await repo.get_task(task.id)).nodes["start"].started == T0


async def test_a_lock_held_past_the_busy_timeout_is_store_unavailable(database_url: str) -> None:
    path = database_url.removeprefix("sqlite+aiosqlite:///")
    lite = SqliteInline(path, engines._SQLITE_PRAGMAS, busy_timeout_s=0.5)
    other = sqlite3.connect(path, isolation_level=None)
    insert = "INSERT INTO api_key (id, name, scope, secret_hash, created) VALUES (?, 'n', 'admin', 'h', '2026-01-01')"
    count = "SELECT count(*) FROM api_key"
    try:
        other.execute("BEGIN IMMEDIATE")
        started = time.monotonic()
        with pytest.raises(errors.StoreUnavailable, match="busy"):
            await lite.write(lambda c: c.execute(insert, ("k1",)))
        assert 0.3 <= time.monotonic() - started < 3.0
        assert await lite.read(lambda c: c.execute(count).fetchone()) == (0,), "readers never wait for the writer"
        other.execute("COMMIT")
        await lite.write(lambda c: c.execute(insert, ("k2",)))
        assert raw(path, "SELECT id FROM api_key") == [("k2",)]
    finally:
        other.close()
        await lite.close()


# -- payloads, checkpoints -----------------------------------------------------------------------


async def test_a_large_output_round_trips_intact(repo: Repository, saved_flow: SavedFlow) -> None:
    await saved_flow()
    task, _ = await repo.create_task("demo", 1, make_request())
    blob = {"text": "é✓猫" * 120_000, "numbers": [i / 7 for i in range(20_000)]}  # ~1.4 MB of JSON
    assert len(codec.dumps(blob)) > 4 * THREAD_ABOVE_BYTES  # so it is written on a thread
    big = NodeRun("start", NodeStatus.SUCCEEDED, T0, T0, 0.0, 0.0, 1, output=blob)
    await repo.save_node_runs_many([(task.id, big), (task.id, NodeRun("end", NodeStatus.RUNNING, T0))])
    assert (await repo.get_task(task.id)).nodes["start"].output == blob
    outcome = TaskOutcome(TaskStatus.SUCCEEDED, T0, 1.0, 0.0, result={"end": blob})
    await repo.finish_task(task.id, outcome, [NodeRun("end", NodeStatus.SUCCEEDED, T0, T0, output={"copy": blob})])
    final = await repo.get_task(task.id)
    assert final.result == {"end": blob} and final.nodes["end"].output == {"copy": blob} and final.nodes["start"] == big
    assert final == (await repo.list_tasks())[0]


async def small_commits(repo: Repository, task_id: int, count: int) -> None:
    """A busy server: one small commit after another (each changing a row), the event loop free between them."""
    for i in range(count):
        await repo.save_node_runs(task_id, [NodeRun(f"n{i % 50}", NodeStatus.RUNNING, attempts=i)])
        await asyncio.sleep(0)


async def test_checkpoints_copy_the_wal_into_the_database_file(repo: Repository, saved_flow: SavedFlow) -> None:
    await saved_flow()
    task, _ = await repo.create_task("demo", 1, make_request())
    path = db_file(repo)
    before = os.path.getsize(path)
    for i in range(_CHECKPOINT_EVERY + 50):  # each commit adds ~1 KB of new rows
        await repo.save_node_runs(task.id, [NodeRun(f"n{i}", NodeStatus.RUNNING, output={"pad": "x" * 1000})])
    await eventually(lambda: os.path.getsize(path) > before + 300_000, timeout=5)


async def test_checkpoints_keep_the_wal_bounded_under_steady_load(repo: Repository, saved_flow: SavedFlow) -> None:
    # A checkpoint racing the commits never copies the whole WAL, so the WAL never starts over (seen: 16.7 MB
    # after 4000 commits); one that completes lets the next commit restart it (~2.3 MB here).
    await saved_flow()
    task, _ = await repo.create_task("demo", 1, make_request())
    wal = db_file(repo) + "-wal"
    start = os.path.getsize(wal)
    probe, total = _CHECKPOINT_EVERY - 100, 8 * _CHECKPOINT_EVERY
    await small_commits(repo, task.id, probe)  # before the first checkpoint: what each commit adds
    without_checkpoints = start + (os.path.getsize(wal) - start) * total / probe
    await small_commits(repo, task.id, total - probe)
    assert os.path.getsize(wal) < without_checkpoints / 2, f"WAL {os.path.getsize(wal)} B, {without_checkpoints:.0f} B unchecked"


# -- errors --------------------------------------------------------------------------------------


async def test_missing_rows_and_idempotency_on_the_inline_path(repo: Repository, saved_flow: SavedFlow) -> None:
    await saved_flow()
    task, _ = await repo.create_task("demo", 1, make_request())
    with pytest.raises(errors.TaskNotFound):
        await repo.save_node_runs(404, [NodeRun("start")])
    with pytest.raises(errors.TaskNotFound):  # all or nothing: the known task's run is not written either
        await repo.save_node_runs_many([(task.id, NodeRun("start")), (404, NodeRun("start"))])
    with pytest.raises(errors.TaskNotFound):
        await repo.finish_task(404, TaskOutcome(TaskStatus.SUCCEEDED, T0, 0.0, 0.0), [NodeRun("start")])
    with pytest.raises(errors.RevisionNotFound):
        await repo.create_task("demo", 2, make_request(), node_ids=["start"])
    assert await repo.list_tasks() == [await repo.get_task(task.id)] and (await repo.get_task(task.id)).nodes == {}
    assert raw(db_file(repo), "SELECT count(*) FROM node_run") == [(0,)]

    first, created = await repo.create_task("demo", 1, make_request(), idempotency_key="k", fingerprint="f", node_ids=["end"])
    again, created_again = await repo.create_task("demo", 1, make_request(), idempotency_key="k", fingerprint="f")
    assert created and not created_again and again == first and list(again.nodes) == ["end"]
    with pytest.raises(errors.IdempotencyConflict):
        await repo.create_task("demo", 1, make_request(x=1), idempotency_key="k", fingerprint="g")
    assert await repo.count_tasks() == 2


async def test_values_that_are_not_json_write_nothing(repo: Repository, saved_flow: SavedFlow) -> None:
    await saved_flow()
    task, _ = await repo.create_task("demo", 1, make_request())
    await repo.claim_next_task()
    await repo.save_node_runs(task.id, [NodeRun("start", NodeStatus.RUNNING, T0)])
    before = await repo.get_task(task.id)
    bad_run = NodeRun("start", NodeStatus.SUCCEEDED, T0, T0, output={"x": object()})
    with pytest.raises(TypeError, match="JSON serial"):
        await repo.finish_task(task.id, TaskOutcome(TaskStatus.SUCCEEDED, T0, 0.0, 0.0), [bad_run])
    with pytest.raises(TypeError, match="JSON serial"):
        await repo.finish_task(task.id, TaskOutcome(TaskStatus.SUCCEEDED, T0, 0.0, 0.0, result={"x": object()}), [])
    after = await repo.get_task(task.id)
    assert after == before and after.status is TaskStatus.RUNNING
    await repo.finish_task(task.id, TaskOutcome(TaskStatus.SUCCEEDED, T0, 0.0, 0.0), [])  # the writer is still usable
    assert (await repo.get_task(task.id)).status is TaskStatus.SUCCEEDED


# -- dispose -------------------------------------------------------------------------------------


async def test_dispose_closes_the_inline_connections(repo: Repository, saved_flow: SavedFlow) -> None:
    await saved_flow()
    task, _ = await repo.create_task("demo", 1, make_request())
    await repo.get_task(task.id)  # both inline connections are open now
    path = db_file(repo)
    assert os.path.exists(path + "-wal")
    await storage.dispose(repo.engine)
    assert not os.path.exists(path + "-wal"), "the last connection to close removes the WAL: one was left open"
    with pytest.raises(errors.StoreUnavailable):
        await repo.get_task(task.id)
    with pytest.raises(errors.StoreUnavailable):
        await repo.save_node_runs(task.id, [NodeRun("start")])
    assert raw(path, "SELECT count(*) FROM node_run") == [(0,)]


async def test_writes_in_flight_at_dispose_fail_and_leave_nothing_open(repo: Repository, saved_flow: SavedFlow) -> None:
    await saved_flow()
    task, _ = await repo.create_task("demo", 1, make_request())
    path, lite = db_file(repo), engines.inline(repo.engine)
    assert lite is not None
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        retrying = asyncio.ensure_future(repo.save_node_runs(task.id, [NodeRun("a")]))
        await eventually(lite.write_lock.locked)
        queued = asyncio.ensure_future(repo.save_node_runs(task.id, [NodeRun("b")]))
        await asyncio.sleep(0)  # it waits on the write lock now
        await storage.dispose(repo.engine)
        other.execute("COMMIT")
        outcomes = await asyncio.gather(retrying, queued, return_exceptions=True)
        other.close()
        assert not os.path.exists(path + "-wal"), "a connection was left open"
        assert raw(path, "SELECT node_id FROM node_run") == []
        assert [type(o) for o in outcomes] == [errors.StoreClosed] * 2
    finally:
        other.close()
        await lite.close()  # anything a failed run left open (closing twice is harmless)
