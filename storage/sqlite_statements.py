"""The hot statements in SQLite's own SQL (see :mod:`storage.sqlite_hot_path`).

Values are stored exactly as SQLAlchemy stores them through :mod:`storage.tables` (datetimes as
``YYYY-MM-DD HH:MM:SS.ffffff`` UTC text, JSON as text, booleans as 0/1), so rows written here read
back through the API side's SQLAlchemy queries and the other way round; ``tests/storage`` checks both.
Every ``*_work`` function runs inside one transaction of :class:`storage.sqlite_inline.SqliteInline`
and does nothing but SQL (it may be run again if the database was busy).
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from graph_runtime.events import TaskEvent
from graph_runtime.models import NOTHING_FENCED, Fenced, Lease, NodeRun, Task
from nodes import codec
from storage import rows
from storage.hot_path import evictable

_TASK_COLUMNS = ", ".join(rows.TASK_COLUMNS)
_RUN_COLUMNS = ", ".join(rows.RUN_COLUMNS)

_INSERT_TASK = (
    "INSERT INTO task (flow_id, revision, data, created, idempotency_key, request_fingerprint, key_id, mode,"
    " parent_id, status, claims, started, lease_owner, lease_expires, cancel_requested)"
    " SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, 0 WHERE {guard}"  # a WHERE: SQLite's upsert needs one
)
# if_latest: only while the revision is still the flow's latest and the flow is not deleted.
_LATEST_GUARD = "EXISTS (SELECT 1 FROM flow WHERE id = ?1 AND latest_revision = ?2 AND NOT deleted)"
_ONCE = " ON CONFLICT (flow_id, idempotency_key) DO NOTHING"
_INSERT_TASKS = {  # (keyed, if_latest) -> the statement
    (keyed, if_latest): _INSERT_TASK.format(guard=_LATEST_GUARD if if_latest else "true") + (_ONCE if keyed else "")
    + " RETURNING id"
    for keyed in (False, True) for if_latest in (False, True)
}
_INSERT_PENDING = "INSERT INTO node_run (task_id, node_id, status, attempts) VALUES (?, ?, 'pending', 0)"
_UPSERT_RUNS = (
    f"INSERT INTO node_run ({_RUN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (task_id, node_id) DO UPDATE SET status = excluded.status, started = excluded.started,"
    " finished = excluded.finished, execution_time = excluded.execution_time, cost = excluded.cost,"
    " attempts = excluded.attempts, error = excluded.error, output = excluded.output, cached = excluded.cached,"
    " saved_cost = excluded.saved_cost, items = excluded.items, waiting_for_pool = excluded.waiting_for_pool"
)
# A batch of a task's events (storage.rows.event_params); the fence is checked once per commit by
# append_events_work.
_APPEND_EVENT = (
    "INSERT INTO task_event_batch (task_id, seq, last_seq, final, events) VALUES (?, ?, ?, ?, ?)"
    + rows.EVENTS_CONFLICT
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
_TASK_STATUS = "SELECT status FROM task WHERE id = ?"
# A task's batches holding a number after ``after``: from the one holding ``after`` itself (two
# ranges of the key), leaving it out when it ends there (an idle poll reads nothing).
_EVENTS_AFTER = (
    f"SELECT {', '.join(rows.EVENT_COLUMNS)} FROM task_event_batch WHERE task_id = ?1 AND seq >= coalesce("
    "(SELECT max(seq) FROM task_event_batch WHERE task_id = ?1 AND seq <= ?2), 0) AND last_seq > ?2 ORDER BY seq"
)
_LAST_EVENT = "SELECT max(last_seq) FROM task_event_batch WHERE task_id = ?"
_FLOW_REVISION = (
    "SELECT flow.deleted, flow_revision.revision, flow_revision.created FROM flow LEFT OUTER JOIN flow_revision"
    " ON flow_revision.flow_id = flow.id AND flow_revision.revision = {which} WHERE flow.id = ?"
)
_LATEST_REVISION = _FLOW_REVISION.format(which="flow.latest_revision")
_GIVEN_REVISION = _FLOW_REVISION.format(which="?")
_DEFINITION = "SELECT definition FROM flow_revision WHERE flow_id = ? AND revision = ?"
_FLOW_EXISTS = "SELECT 1 FROM flow WHERE id = ?"
_RENEW = (
    "UPDATE task SET lease_expires = ? WHERE id IN ({ids}) AND lease_owner = ? AND status = 'running' RETURNING id"
)


_CODEC = rows.SQLITE
dt = rows.dt_text


def _runs(conn: sqlite3.Connection, task_id: int, *, items: bool = True) -> dict[str, NodeRun]:
    """The task's node runs; with ``items=False`` without its map items' runs (the task view)."""
    query = _RUNS_OF_TASK if items else _NODE_RUNS_OF_TASK
    return {row[1]: _CODEC.node_run(row) for row in conn.execute(query, (task_id,))}


# -- transactions ----------------------------------------------------------------------------


def create_task_work(
    conn: sqlite3.Connection, values: tuple[Any, ...], keyed: bool, node_ids: Sequence[str], if_latest: bool = False
) -> int | None:
    """Insert a queued task and its pending node runs; None if the idempotency key was taken, or
    with ``if_latest`` if its revision is not its flow's latest (or the flow was deleted).

    Raises ``sqlite3.IntegrityError`` when the flow revision does not exist.
    """
    task_id = conn.execute(_INSERT_TASKS[keyed, if_latest], values).fetchone()
    if task_id is None:
        return None
    conn.executemany(_INSERT_PENDING, [(task_id[0], node_id) for node_id in node_ids])
    return task_id[0]


def earlier_task_work(conn: sqlite3.Connection, flow_id: str, key: str) -> tuple[Task, str | None] | None:
    """The task created with this idempotency key and its request fingerprint, or None."""
    row = conn.execute(_TASK_BY_KEY, (flow_id, key)).fetchone()
    return None if row is None else (_CODEC.task(row, _runs(conn, row[0])), row[rows.FINGERPRINT])


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
    found = conn.execute(_claim_many(len(pools)), params).fetchall()
    return _claimed(conn, sorted(found, key=lambda row: row[0]))


def _claimed(conn: sqlite3.Connection, claimed: list[Any]) -> list[Task]:
    # A first claim has only the pending rows written with the task: the executor makes those itself.
    resumed = [row[0] for row in claimed if row[rows.CLAIMS] > 1]
    runs: dict[int, dict[str, NodeRun]] = {task_id: {} for task_id in resumed}
    if resumed:
        query = f"SELECT {_RUN_COLUMNS} FROM node_run WHERE task_id IN ({','.join('?' * len(resumed))})"
        for run_row in conn.execute(query + " ORDER BY task_id, started ASC NULLS LAST, node_id", resumed):
            runs[run_row[0]][run_row[1]] = _CODEC.node_run(run_row)
    return [_CODEC.task(row, runs.get(row[0], {})) for row in claimed]


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
    found = conn.execute(
        f"SELECT id, lease_owner, claims FROM task WHERE status = 'running' AND id IN ({','.join('?' * len(ids))})", ids
    )
    return {row[0] for row in found if leases[row[0]] == Lease(row[1], row[2])}


def upsert_runs_work(conn: sqlite3.Connection, params: list[tuple[Any, ...]], leases: dict[int, Lease],
                     events: Sequence[tuple[Any, ...]] = ()) -> Fenced:
    """Insert or update node runs (``run_params`` rows), and store task events (``rows.event_params``,
    each fenced by its epoch) in the same transaction; return what the fence kept out.

    Rows of a task named in ``leases`` are written only while that lease is the task's current
    one; rows of other tasks are written as they are. Raises IntegrityError for an unknown task.
    """
    held = held_work(conn, leases) if leases else set()
    refused = frozenset(leases) - held
    if params:
        conn.executemany(_UPSERT_RUNS, [row for row in params if row[0] not in refused] if refused else params)
    fenced = append_events_work(conn, events, {task_id: leases[task_id].epoch for task_id in held}) if events else frozenset()
    return Fenced(refused, fenced) if refused or fenced else NOTHING_FENCED


def append_events_work(conn: sqlite3.Connection, events: Sequence[tuple[Any, ...]],
                       claims: dict[int, int]) -> frozenset[tuple[int, int]]:
    """Store task events (``rows.event_params``) whose epoch is still their task's claim count (SPEC
    §10: a worker that lost its lease records nothing); ``claims``: the counts this transaction
    knows already. One look per batch, not one per event. Returns the (task, epoch) fenced off."""
    epoch = rows.EVENT_EPOCH
    unknown = list({row[0] for row in events if row[epoch] is not None and row[0] not in claims})
    if unknown:
        found = conn.execute(f"SELECT id, claims FROM task WHERE id IN ({','.join('?' * len(unknown))})", unknown)
        claims = {**claims, **dict(found.fetchall())}
    kept = [row[:epoch] for row in events if row[epoch] is None or claims.get(row[0]) == row[epoch]]
    conn.executemany(_APPEND_EVENT, kept)
    if len(kept) == len(events):
        return frozenset()
    return frozenset((row[0], row[epoch]) for row in events if row[epoch] is not None and claims.get(row[0]) != row[epoch])


def finish_work(conn: sqlite3.Connection, values: tuple[Any, ...], runs: list[tuple[Any, ...]],
                lease: Lease | None, events: Sequence[tuple[Any, ...]] = ()) -> str:
    """Record a task's end (``_FINISH`` values), its last node runs and events (its final one).

    Returns ``"ok"``, ``"missing"`` (no such task) or ``"lost"`` (``lease`` is not the task's current one).
    """
    if lease is None:
        changed = conn.execute(_FINISH, values).rowcount
    else:
        changed = conn.execute(_FINISH_FENCED, (*values, lease.worker, lease.epoch)).rowcount
    if changed == 0:
        return "missing" if conn.execute(_TASK_EXISTS, (values[-1],)).fetchone() is None else "lost"
    conn.executemany(_UPSERT_RUNS, runs)
    if events:
        append_events_work(conn, events, {values[-1]: lease.epoch} if lease is not None else {})
    return "ok"


def task_work(conn: sqlite3.Connection, task_id: int, items: bool = False) -> Task | None:
    """The task with its node runs (its map items' runs too if ``items``), from one snapshot."""
    row = conn.execute(_TASK_BY_ID, (task_id,)).fetchone()
    return None if row is None else _CODEC.task(row, _runs(conn, task_id, items=items))


def events_since_work(conn: sqlite3.Connection, cursors: Sequence[tuple[int, int]]) -> list[TaskEvent]:
    """Each task's events after its ``seq``: one cached statement per task, each an index range."""
    found: list[TaskEvent] = []
    for task_id, after in sorted(cursors):
        for row in conn.execute(_EVENTS_AFTER, (task_id, after)):
            found += _CODEC.events(row, found[-1].seq if found and found[-1].task_id == task_id else after)
    return found


def last_event_work(conn: sqlite3.Connection, task_id: int) -> int:
    return int(conn.execute(_LAST_EVENT, (task_id,)).fetchone()[0] or 0)


def task_status_work(conn: sqlite3.Connection, task_id: int) -> str | None:
    row = conn.execute(_TASK_STATUS, (task_id,)).fetchone()
    return None if row is None else str(row[0])


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
    return None if row is None else (bool(row[0]), row[1], rows.parse_dt_text(row[2]))


def definition_work(conn: sqlite3.Connection, flow_id: str, revision: int) -> dict[str, Any] | str:
    """The definition of a flow revision, or ``"no flow"`` / ``"no revision"``."""
    row = conn.execute(_DEFINITION, (flow_id, revision)).fetchone()
    if row is not None:
        return codec.loads(row[0])  # type: ignore[no-any-return]
    return "no revision" if conn.execute(_FLOW_EXISTS, (flow_id,)).fetchone() else "no flow"


def renew_work(conn: sqlite3.Connection, worker: str, task_ids: Sequence[int], expires: datetime) -> set[int]:
    """Extend ``worker``'s leases on these running tasks; the ids it still holds."""
    marks = ",".join("?" * len(task_ids))
    found = conn.execute(_RENEW.format(ids=marks), (dt(expires), *task_ids, worker))
    return {row[0] for row in found}


# -- the output cache ------------------------------------------------------------------------

_CACHE_GET = "SELECT output, cost, last_hit FROM node_cache WHERE key = ?"
_CACHE_TOUCH = "UPDATE node_cache SET last_hit = ? WHERE key = ?"
_CACHE_UPSERT = (
    "INSERT INTO node_cache (key, node_type, output, cost, size, created, last_hit) VALUES (?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (key) DO UPDATE SET node_type = excluded.node_type, output = excluded.output,"
    " cost = excluded.cost, size = excluded.size, last_hit = excluded.last_hit"
)
EVICT_PAGE = 100  # entries looked at per eviction round: one round frees a lot, rarely more than one


def cache_get_work(conn: sqlite3.Connection, key: str) -> tuple[str, float, datetime] | None:
    """The output (JSON text), cost and last hit stored under ``key``."""
    row = conn.execute(_CACHE_GET, (key,)).fetchone()
    return None if row is None else (row[0], row[1], rows.parse_dt_text(row[2]))  # type: ignore[return-value]


def cache_touch_work(conn: sqlite3.Connection, key: str, now: datetime) -> None:
    conn.execute(_CACHE_TOUCH, (dt(now), key))


def cache_put_work(conn: sqlite3.Connection, row: tuple[Any, ...], evict_to: int | None) -> int | None:
    """Upsert a ``node_cache`` row (key, node_type, output text, cost, size, now); then, if
    ``evict_to`` is given, evict down to it and return the total left."""
    key, node_type, text, cost, size, now = row
    conn.execute(_CACHE_UPSERT, (key, node_type, text, cost, size, dt(now), dt(now)))
    return None if evict_to is None else cache_evict_work(conn, evict_to)


def cache_evict_work(conn: sqlite3.Connection, max_bytes: int) -> int:
    """Delete least recently hit entries until their total is within ``max_bytes``; the total left."""
    total = int(conn.execute("SELECT COALESCE(SUM(size), 0) FROM node_cache").fetchone()[0])
    while total > max_bytes:
        oldest = conn.execute(f"SELECT key, size FROM node_cache ORDER BY last_hit, key LIMIT {EVICT_PAGE}").fetchall()
        doomed, total = evictable(oldest, total, max_bytes)
        if not doomed:
            break
        conn.execute(f"DELETE FROM node_cache WHERE key IN ({', '.join('?' * len(doomed))})", doomed)
    return total
