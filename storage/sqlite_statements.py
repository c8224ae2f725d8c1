"""The hot statements in SQLite's own SQL, and the rows they read and write.

Values are stored exactly as SQLAlchemy stores them through :mod:`storage.tables` (datetimes as
``YYYY-MM-DD HH:MM:SS.ffffff`` UTC text, JSON as text, booleans as 0/1), so rows written here read
back through the SQLAlchemy path and the other way round; ``tests/storage`` checks both ways.
Every ``*_work`` function runs inside one transaction of :class:`storage.sqlite_inline.SqliteInline`
and does nothing but SQL (it may be run again if the database was busy).
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from graph_runtime.models import Lease, NodeRun, NodeStatus, RunError, Task, TaskRequest, TaskStatus
from nodes import codec

_TASK_COLUMNS = (
    "id, flow_id, revision, status, data, created, started, finished, result, execution_time,"
    " execution_cost, error, claims, request_fingerprint, interruptions, lease_owner, parent_id"
)
_RUN_COLUMNS = (
    "task_id, node_id, status, started, finished, execution_time, cost, attempts, error, output, cached, saved_cost,"
    " items, waiting_for_pool"
)

_INSERT_TASK = (
    "INSERT INTO task (flow_id, revision, status, data, created, cancel_requested, claims, idempotency_key,"
    " request_fingerprint, key_id, mode, parent_id) VALUES (?, ?, 'queued', ?, ?, 0, 0, ?, ?, ?, ?, ?)"
)
_INSERT_TASK_ONCE = _INSERT_TASK + " ON CONFLICT (flow_id, idempotency_key) DO NOTHING"
_INSERT_PENDING = "INSERT INTO node_run (task_id, node_id, status, attempts) VALUES (?, ?, 'pending', 0)"
_UPSERT_RUNS = (
    f"INSERT INTO node_run ({_RUN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (task_id, node_id) DO UPDATE SET status = excluded.status, started = excluded.started,"
    " finished = excluded.finished, execution_time = excluded.execution_time, cost = excluded.cost,"
    " attempts = excluded.attempts, error = excluded.error, output = excluded.output, cached = excluded.cached,"
    " saved_cost = excluded.saved_cost, items = excluded.items, waiting_for_pool = excluded.waiting_for_pool"
)
_CLAIM = (
    "UPDATE task SET status = 'running', started = ?, claims = claims + 1, lease_owner = ?, lease_expires = ?"
    " WHERE id = {which} AND status = 'queued' RETURNING " + _TASK_COLUMNS
)
_CLAIM_ONE = _CLAIM.format(which="?")
# A batch claim: queued tasks, and tasks parked for one of the claimer's pools (SPEC §10). A
# parked task keeps ``started``, and its claim is a new fencing epoch (claims + 1). Each half is
# its own ordered, limited scan (queued on ix_task_status_id, parked on ix_task_pool_id): one
# OR'ed condition would make SQLite walk every task in id order.
_CLAIM_MANY = (
    "UPDATE task SET status = 'running', started = coalesce(started, ?), claims = claims + 1, lease_owner = ?,"
    " lease_expires = ?, pool = NULL WHERE id IN ({which}) RETURNING " + _TASK_COLUMNS
)
_QUEUED_IDS = "SELECT id FROM task WHERE status = 'queued' ORDER BY id LIMIT ?"
_PARKED_IDS = (
    "SELECT id FROM task WHERE pool IN ({pools}) AND status = 'running' AND lease_owner IS NULL ORDER BY id LIMIT ?"
)
_FINISH = (
    "UPDATE task SET status = ?, finished = ?, execution_time = ?, execution_cost = ?, result = ?, error = ?,"
    " lease_owner = NULL, lease_expires = NULL WHERE id = ?"
)
# The fence: only the worker holding the task's current claim may end it.
_FINISH_FENCED = _FINISH + " AND status = 'running' AND lease_owner = ? AND claims = ?"
_PARK = (
    "UPDATE task SET pool = ?, lease_owner = NULL, lease_expires = NULL"
    " WHERE id = ? AND status = 'running' AND lease_owner = ? AND claims = ?"
)
_TASK_EXISTS = "SELECT 1 FROM task WHERE id = ?"
_TASK_BY_ID = f"SELECT {_TASK_COLUMNS} FROM task WHERE id = ?"
_TASK_BY_KEY = f"SELECT {_TASK_COLUMNS} FROM task WHERE flow_id = ? AND idempotency_key = ?"
_RUNS_OF_TASK = (
    f"SELECT {_RUN_COLUMNS} FROM node_run WHERE task_id = ? ORDER BY started ASC NULLS LAST, node_id"
)
# The task view: a map's item runs (``map1[3]``) are summarised by the map's own row, not listed.
_NODE_RUNS_OF_TASK = (
    f"SELECT {_RUN_COLUMNS} FROM node_run WHERE task_id = ? AND node_id NOT LIKE '%]'"
    " ORDER BY started ASC NULLS LAST, node_id"
)
_CANCEL_FLAG = "SELECT cancel_requested FROM task WHERE id = ?"
_FLOW_REVISION = (
    "SELECT flow.deleted, flow_revision.revision, flow_revision.created FROM flow LEFT OUTER JOIN flow_revision"
    " ON flow_revision.flow_id = flow.id AND flow_revision.revision = {which} WHERE flow.id = ?"
)
_LATEST_REVISION = _FLOW_REVISION.format(which="flow.latest_revision")
_GIVEN_REVISION = _FLOW_REVISION.format(which="?")


# -- values ----------------------------------------------------------------------------------


def dt(value: datetime | None) -> str | None:
    """SQLAlchemy's SQLite DATETIME text for an aware datetime (the UTC wall time)."""
    if value is None:
        return None
    if value.tzinfo is not UTC:
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pass an aware UTC datetime")
        value = value.astimezone(UTC)
    return value.isoformat(" ", "microseconds")[:-6]  # without "+00:00"


def _parse_dt(text: str | None) -> datetime | None:
    # Parsing the zone is ~6x faster than .replace(tzinfo=UTC) afterwards (a poll parses dozens).
    return None if text is None else datetime.fromisoformat(text + "+00:00")


def json_text(value: Any) -> str | None:
    """JSON text, or NULL for None (the tables' JSON columns are ``none_as_null``)."""
    return None if value is None else codec.dumps_str(value)


def _json(text: str | None) -> Any:
    return None if text is None else codec.loads(text)


def run_params(task_id: int, run: NodeRun) -> tuple[Any, ...]:
    """One node run's ``_UPSERT_RUNS`` parameters."""
    return (
        task_id, run.node_id, NodeStatus(run.status).value, dt(run.started), dt(run.finished), run.execution_time,
        run.cost, run.attempts, json_text(run.error.as_dict() if run.error else None), json_text(run.output),
        1 if run.cached else 0, run.saved_cost, json_text(run.items), run.waiting_for_pool,
    )


def params_size(params: Iterable[tuple[Any, ...]]) -> int:
    """Roughly how many bytes these ``run_params`` rows write (their JSON: output and error)."""
    return sum(len(row[9] or "") + len(row[8] or "") for row in params)


# Lookups, not Enum calls: a poll converts a status per node.
_TASK_STATUS = {status.value: status for status in TaskStatus}
_NODE_STATUS = {status.value: status for status in NodeStatus}


def _task(row: Sequence[Any], nodes: dict[str, NodeRun]) -> Task:
    lease = Lease(row[15], row[12]) if row[15] is not None and row[3] == "running" else None
    return Task(
        id=row[0], flow_id=row[1], revision=row[2], request=TaskRequest.from_data(codec.loads(row[4])),
        status=_TASK_STATUS[row[3]], created=_parse_dt(row[5]), started=_parse_dt(row[6]), finished=_parse_dt(row[7]),
        result=_json(row[8]), execution_time=row[9], execution_cost=row[10], error=RunError.from_dict(_json(row[11])),
        nodes=nodes, claims=row[12], interruptions=row[14], lease=lease, parent_id=row[16],
    )


def _node_run(row: Sequence[Any]) -> NodeRun:
    return NodeRun(
        node_id=row[1], status=_NODE_STATUS[row[2]], started=_parse_dt(row[3]), finished=_parse_dt(row[4]),
        execution_time=row[5], cost=row[6], attempts=row[7], error=RunError.from_dict(_json(row[8])), output=_json(row[9]),
        cached=bool(row[10]), saved_cost=row[11], items=_json(row[12]), waiting_for_pool=row[13],
    )


def _runs(conn: sqlite3.Connection, task_id: int, *, items: bool = True) -> dict[str, NodeRun]:
    """The task's node runs; with ``items=False`` without its map items' runs (the task view)."""
    query = _RUNS_OF_TASK if items else _NODE_RUNS_OF_TASK
    return {row[1]: _node_run(row) for row in conn.execute(query, (task_id,))}


# -- transactions ----------------------------------------------------------------------------


def create_task_work(
    conn: sqlite3.Connection, values: tuple[Any, ...], keyed: bool, node_ids: Sequence[str]
) -> int | None:
    """Insert a queued task and its pending node runs; None if the idempotency key was taken.

    Raises ``sqlite3.IntegrityError`` when the flow revision does not exist.
    """
    task_id = conn.execute((_INSERT_TASK_ONCE if keyed else _INSERT_TASK) + " RETURNING id", values).fetchone()
    if task_id is None:
        return None
    conn.executemany(_INSERT_PENDING, [(task_id[0], node_id) for node_id in node_ids])
    return task_id[0]


def earlier_task_work(conn: sqlite3.Connection, flow_id: str, key: str) -> tuple[Task, str | None] | None:
    """The task created with this idempotency key and its request fingerprint, or None."""
    row = conn.execute(_TASK_BY_KEY, (flow_id, key)).fetchone()
    return None if row is None else (_task(row, _runs(conn, row[0])), row[13])


def claim_work(conn: sqlite3.Connection, task_id: int, now: datetime, worker: str, expires: datetime) -> Task | None:
    """Move ``task_id`` to running if it is queued; it with its node runs."""
    row = conn.execute(_CLAIM_ONE, (dt(now), worker, dt(expires), task_id)).fetchone()
    return None if row is None else _claimed(conn, [row])[0]


@functools.cache
def _claim_many(pools: int) -> str:
    if not pools:
        return _CLAIM_MANY.format(which=_QUEUED_IDS)
    parked = _PARKED_IDS.format(pools=",".join("?" * pools))
    return _CLAIM_MANY.format(
        which=f"SELECT id FROM ({_QUEUED_IDS}) UNION ALL SELECT id FROM ({parked}) ORDER BY id LIMIT ?")


def claim_many_work(conn: sqlite3.Connection, limit: int, pools: Sequence[str], now: datetime, worker: str,
                    expires: datetime) -> list[Task]:
    """Move up to ``limit`` tasks to running, oldest first: queued ones and ones parked for ``pools``."""
    params: tuple[Any, ...] = (dt(now), worker, dt(expires), limit)
    if pools:
        params = (*params, *pools, limit, limit)
    rows = conn.execute(_claim_many(len(pools)), params).fetchall()
    return _claimed(conn, sorted(rows, key=lambda row: row[0]))


def _claimed(conn: sqlite3.Connection, rows: list[Any]) -> list[Task]:
    # A first claim has only the pending rows written with the task: the executor makes those itself.
    resumed = [row[0] for row in rows if row[12] > 1]
    runs: dict[int, dict[str, NodeRun]] = {task_id: {} for task_id in resumed}
    if resumed:
        query = f"SELECT {_RUN_COLUMNS} FROM node_run WHERE task_id IN ({','.join('?' * len(resumed))})"
        for run_row in conn.execute(query + " ORDER BY task_id, started ASC NULLS LAST, node_id", resumed):
            runs[run_row[0]][run_row[1]] = _node_run(run_row)
    return [_task(row, runs.get(row[0], {})) for row in rows]


def any_claimable_work(conn: sqlite3.Connection, pools: Sequence[str]) -> bool:
    """Whether :func:`claim_many_work` would find anything (a read: far cheaper than an empty write)."""
    if conn.execute("SELECT 1 FROM task WHERE status = 'queued' LIMIT 1").fetchone() is not None:
        return True
    if not pools:
        return False
    parked = _PARKED_IDS.format(pools=",".join("?" * len(pools)))
    return conn.execute(parked, (*pools, 1)).fetchone() is not None


def park_work(conn: sqlite3.Connection, task_id: int, pool: str, runs: list[tuple[Any, ...]], lease: Lease) -> str:
    """Park a task for ``pool`` (drop its lease, keep it running) with its node runs; the fence as :func:`finish_work`."""
    changed = conn.execute(_PARK, (pool, task_id, lease.worker, lease.epoch)).rowcount
    if changed == 0:
        return "missing" if conn.execute(_TASK_EXISTS, (task_id,)).fetchone() is None else "lost"
    conn.executemany(_UPSERT_RUNS, runs)
    return "ok"


def held_work(conn: sqlite3.Connection, leases: dict[int, Lease]) -> set[int]:
    """Which of these tasks are still running under exactly these leases (the fence)."""
    if not leases:
        return set()
    ids = list(leases)
    rows = conn.execute(
        f"SELECT id, lease_owner, claims FROM task WHERE status = 'running' AND id IN ({','.join('?' * len(ids))})", ids
    )
    return {row[0] for row in rows if leases[row[0]] == Lease(row[1], row[2])}


def upsert_runs_work(conn: sqlite3.Connection, params: list[tuple[Any, ...]], leases: dict[int, Lease]) -> frozenset[int]:
    """Insert or update node runs (``run_params`` rows); return the ids of tasks refused by the fence.

    Rows of a task named in ``leases`` are written only while that lease is the task's current
    one; rows of other tasks are written as they are. Raises IntegrityError for an unknown task.
    """
    held = held_work(conn, leases)
    refused = frozenset(leases) - held
    conn.executemany(_UPSERT_RUNS, [row for row in params if row[0] not in refused] if refused else params)
    return refused


def finish_work(conn: sqlite3.Connection, values: tuple[Any, ...], runs: list[tuple[Any, ...]],
                lease: Lease | None) -> str:
    """Record a task's end (``_FINISH`` values) and its last node runs.

    Returns ``"ok"``, ``"missing"`` (no such task) or ``"lost"`` (``lease`` is not the task's current one).
    """
    if lease is None:
        changed = conn.execute(_FINISH, values).rowcount
    else:
        changed = conn.execute(_FINISH_FENCED, (*values, lease.worker, lease.epoch)).rowcount
    if changed == 0:
        return "missing" if conn.execute(_TASK_EXISTS, (values[-1],)).fetchone() is None else "lost"
    conn.executemany(_UPSERT_RUNS, runs)
    return "ok"


def task_work(conn: sqlite3.Connection, task_id: int, items: bool = False) -> Task | None:
    """The task with its node runs (its map items' runs too if ``items``), from one snapshot."""
    row = conn.execute(_TASK_BY_ID, (task_id,)).fetchone()
    return None if row is None else _task(row, _runs(conn, task_id, items=items))


def cancel_flag_work(conn: sqlite3.Connection, task_id: int) -> bool | None:
    row = conn.execute(_CANCEL_FLAG, (task_id,)).fetchone()
    return None if row is None else bool(row[0])


def flow_revision_work(
    conn: sqlite3.Connection, flow_id: str, revision: int | None
) -> tuple[bool, int | None, datetime | None] | None:
    """``(deleted, revision, created)`` of the latest or given revision; None if the flow never existed."""
    if revision is None:
        row = conn.execute(_LATEST_REVISION, (flow_id,)).fetchone()
    else:
        row = conn.execute(_GIVEN_REVISION, (revision, flow_id)).fetchone()
    return None if row is None else (bool(row[0]), row[1], _parse_dt(row[2]))
