"""The hot path on PostgreSQL: asyncpg directly (:class:`storage.engine.PgPool`), no SQLAlchemy.

Each operation is as few round trips as its SQL allows: most are one statement in autocommit, a
write and its node runs folded together with data-modifying ``WITH`` clauses (one statement is
one transaction), so a node's end or a task's end costs one round trip and one commit. Node runs
travel as one JSON array of rows (``jsonb_array_elements``), encoded by the project's codec.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from datetime import datetime, timedelta
from typing import Any

from graph_runtime import errors
from graph_runtime.events import EventBatch, TaskEvent
from graph_runtime.models import NOTHING_FENCED, Fenced, Lease, NodeRun, Task, TaskOutcome, TaskStatus
from nodes import codec
from storage import convert, rows
from storage.engine import PgPool
from storage.errors import IntegrityViolation
from storage.hot_path import CacheRow, encoded_as, evictable, outcome_raised, outcome_values
from storage.wakeups import CHANNEL, ENDED_CHANNEL

log = logging.getLogger(__name__)

_CODEC = rows.POSTGRES
_TASK_COLUMNS = ", ".join(rows.TASK_COLUMNS)
_RUN_COLUMNS = ", ".join(rows.RUN_COLUMNS)
_NOTIFY = f"pg_notify('{CHANNEL}', '')"
_WAKE = f"SELECT {_NOTIFY}"

# Node runs as one JSON array of rows ($1 of the statements that write them), each row its
# RUN_COLUMNS by position: one orjson encoding instead of asyncpg encoding 14 arrays (~50 us of
# CPU a statement here, most of it asyncpg's per-element type checks). jsonb: parsed once.
_RUN_ROWS = (
    "(SELECT (r->>0)::bigint AS task_id, r->>1 AS node_id, r->>2 AS status, (r->>3)::timestamptz AS started,"
    " (r->>4)::timestamptz AS finished, (r->>5)::float8 AS execution_time, (r->>6)::float8 AS cost,"
    " (r->>7)::int AS attempts, (r->>8)::json AS error, (r->>9)::json AS output, (r->>10)::bool AS cached,"
    " (r->>11)::float8 AS saved_cost, (r->>12)::json AS items, r->>13 AS waiting_for_pool"
    " FROM jsonb_array_elements($1::jsonb) AS r) AS u"
)
_UPSERT_RUNS = (
    f"INSERT INTO node_run ({_RUN_COLUMNS}) SELECT * FROM {_RUN_ROWS} {{where}}"
    " ON CONFLICT (task_id, node_id) DO UPDATE SET "
    + ", ".join(f"{name} = excluded.{name}" for name in rows.RUN_COLUMNS[2:])
)
# Each task's runs in start order, ids in code-point order (the "C" collation) as start_order_key sorts them.
_RUNS_OF_TASKS = (
    f"SELECT {_RUN_COLUMNS} FROM node_run WHERE task_id = ANY($1::bigint[]) {{items}}"
    ' ORDER BY task_id, started ASC NULLS LAST, node_id COLLATE "C"'
)
_RUNS_WITH_ITEMS = _RUNS_OF_TASKS.format(items="")
_RUNS_WITHOUT_ITEMS = _RUNS_OF_TASKS.format(items="AND node_id NOT LIKE '%]'")  # a map's row summarises its items

_CREATE_TASK = (
    "WITH t AS (INSERT INTO task (flow_id, revision, status, data, created, cancel_requested, claims, interruptions,"
    " idempotency_key, request_fingerprint, key_id, mode, parent_id, watcher, started, lease_owner, lease_expires)"
    # A SELECT, not VALUES, for the guard: its parameters are typed (a SELECT's are text otherwise).
    " SELECT $1::varchar, $2::int, $12::varchar, $3::json, $4::timestamptz, false, $13::int, 0, $5::varchar,"
    " $6::varchar, $7::varchar, $8::varchar, $9::bigint, $11::varchar, $14::timestamptz, $15::varchar,"
    " $16::timestamptz WHERE {guard} {conflict} RETURNING id),"
    " p AS (INSERT INTO node_run (task_id, node_id, status, attempts, cached)"
    " SELECT t.id, n, 'pending', 0, false FROM t, unnest($10::varchar[]) AS n)"
    # No NOTIFY here: it would hold a database-wide lock through this commit (see _WakeUps).
    " SELECT id FROM t"
)
# if_latest: only while the revision is still the flow's latest and the flow is not deleted.
_LATEST_GUARD = "EXISTS (SELECT 1 FROM flow WHERE id = $1 AND latest_revision = $2 AND NOT deleted)"
_CREATES = {  # (keyed, if_latest) -> the statement
    (keyed, if_latest): _CREATE_TASK.format(guard=_LATEST_GUARD if if_latest else "true",
                                            conflict="ON CONFLICT (flow_id, idempotency_key) DO NOTHING" if keyed else "")
    for keyed in (False, True) for if_latest in (False, True)
}
_TASK_BY_ID = f"SELECT {_TASK_COLUMNS} FROM task WHERE id = $1"
_TASK_BY_KEY = f"SELECT {_TASK_COLUMNS} FROM task WHERE flow_id = $1 AND idempotency_key = $2"

_CLAIMED = (
    "UPDATE task SET status = 'running', started = coalesce(started, $1), claims = claims + 1, lease_owner = $2,"
    " lease_expires = $3, pool = NULL WHERE id IN (SELECT id FROM task WHERE {claimable}"
    " ORDER BY id LIMIT $4 FOR UPDATE SKIP LOCKED) RETURNING " + _TASK_COLUMNS
)
_CLAIM_QUEUED = _CLAIMED.format(claimable="status = 'queued'")
_CLAIM_QUEUED_OR_PARKED = _CLAIMED.format(
    claimable="(status = 'queued' OR (status = 'running' AND lease_owner IS NULL AND pool = ANY($5::varchar[])))")
_CLAIM_ONE = (
    "UPDATE task SET status = 'running', started = $1, claims = claims + 1, lease_owner = $2, lease_expires = $3"
    " WHERE id = $4 AND status = 'queued' RETURNING " + _TASK_COLUMNS
)

# The fence: rows of a task named in the leases ($2 ids, $3 workers, $4 epochs) are written only
# while that lease is its current one; the held rows stay share-locked to the commit, so a requeue
# cannot slip in between. Answers the fenced-off ids.
_SAVE_FENCED = (
    "WITH fence AS (SELECT * FROM unnest($2::bigint[], $3::varchar[], $4::int[]) AS l(id, worker, epoch)),"
    " held AS (SELECT t.id FROM task t JOIN fence ON t.id = fence.id AND t.lease_owner = fence.worker"
    " AND t.claims = fence.epoch WHERE t.status = 'running' ORDER BY t.id FOR SHARE OF t),"
    " w AS (" + _UPSERT_RUNS.format(
        where="WHERE u.task_id NOT IN (SELECT id FROM fence) OR u.task_id IN (SELECT id FROM held)") + ")"
    " SELECT array(SELECT id FROM fence EXCEPT SELECT id FROM held)"
)
_SAVE = _UPSERT_RUNS.format(where="")
# Batches of task events as 6 column arrays from ``${first}`` on (storage.rows.event_params: the
# columns, then the epoch), never over what was written (SPEC §10, §11).
_EVENT_ARRAYS = (
    "unnest(${0}::bigint[], ${1}::int[], ${2}::int[], ${3}::bool[], ${4}::text[], ${5}::int[])"
    " AS e(task_id, seq, last_seq, final, events, epoch)"
)
# DISTINCT ON: one statement may not update a row twice, so of two batches from one number that
# pass the fence (two epochs' writers in one commit) the longest goes in, as SQLite's row by row
# inserts leave it.
_INSERT_EVENTS = (
    "INSERT INTO task_event_batch (task_id, seq, last_seq, final, events)"
    " SELECT DISTINCT ON (e.task_id, e.seq) e.task_id, e.seq, e.last_seq, e.final, e.events::json"
    " FROM {arrays} WHERE {fence} ORDER BY e.task_id, e.seq, e.last_seq DESC"
    + rows.EVENTS_CONFLICT
)
# Each event only while its writer's claim is still the task's (epoch NULL: not fenced); the task row
# is share-locked to the commit, so a claim cannot slip in between. Answers the (task, epoch) of the
# batches fenced off, as two arrays (their writer's subscribers must not be handed them).
_HELD = "EXISTS (SELECT 1 FROM task t WHERE t.id = e.task_id AND t.claims = e.epoch FOR SHARE)"
_APPEND_EVENTS = (
    "WITH e AS (SELECT * FROM " + _EVENT_ARRAYS.format(*range(1, 7)) + "),"
    " ins AS (" + _INSERT_EVENTS.format(arrays="e", fence="e.epoch IS NULL OR " + _HELD) + ")"
    " SELECT array_agg(e.task_id), array_agg(e.epoch) FROM (SELECT DISTINCT task_id, epoch FROM e"
    " WHERE e.epoch IS NOT NULL AND NOT " + _HELD + ") AS e"
)
# The task's end, its runs and its final events ($11..$16) in one statement: the end's own fence covers them.
_FINISH = (
    "WITH f AS (UPDATE task SET status = $2, finished = $3, execution_time = $4, execution_cost = $5,"
    " result = $6::json, error = $7::json, lease_owner = NULL, lease_expires = NULL"
    " WHERE id = $8 AND ($9::varchar IS NULL OR (status = 'running' AND lease_owner = $9 AND claims = $10))"
    " RETURNING id, watcher),"
    " w AS (" + _UPSERT_RUNS.format(where="WHERE EXISTS (SELECT 1 FROM f)") + "),"
    " ev AS (" + _INSERT_EVENTS.format(arrays=_EVENT_ARRAYS.format(*range(11, 17)), fence="EXISTS (SELECT 1 FROM f)")
    + "),"
    # A process waiting for it elsewhere (an API process's ?wait, a stream) reads its end at once.
    # Only then: a NOTIFY holds a database-wide lock through the commit (storage.wakeups.PgEndings).
    f" n AS (SELECT pg_notify('{ENDED_CHANNEL}', id::text) FROM f WHERE watcher <> coalesce($9::varchar, ''))"
    " SELECT (SELECT count(*) FROM f), EXISTS (SELECT 1 FROM task WHERE id = $8), (SELECT count(*) FROM n)"
)
_PARK = (
    "WITH p AS (UPDATE task SET pool = $2, lease_owner = NULL, lease_expires = NULL"
    " WHERE id = $3 AND status = 'running' AND lease_owner = $4 AND claims = $5 RETURNING id),"
    " w AS (" + _UPSERT_RUNS.format(where="WHERE EXISTS (SELECT 1 FROM p)") + "),"
    f" n AS (SELECT {_NOTIFY} FROM p)"  # a worker serving the pool may be idle
    " SELECT (SELECT count(*) FROM p), EXISTS (SELECT 1 FROM task WHERE id = $3), (SELECT count(*) FROM n)"
)
_CANCEL_FLAG = "SELECT cancel_requested FROM task WHERE id = $1"
_TASK_STATUS = "SELECT status FROM task WHERE id = $1"
# Each task's batches from the one holding the number after its cursor on (SQLite's, for many tasks).
_EVENTS_SINCE = (
    f"SELECT {', '.join('e.' + name for name in rows.EVENT_COLUMNS)}, c.after"
    " FROM unnest($1::bigint[], $2::int[]) AS c(id, after) JOIN task_event_batch e ON e.task_id = c.id"
    " AND e.seq >= coalesce((SELECT max(b.seq) FROM task_event_batch b WHERE b.task_id = c.id AND b.seq <= c.after), 0)"
    " AND e.last_seq > c.after ORDER BY e.task_id, e.seq"
)
_LAST_EVENT = "SELECT max(last_seq) FROM task_event_batch WHERE task_id = $1"
# Rows locked in id order, as the fenced save's FOR SHARE takes them: a renewal and a save of the
# same worker's tasks (two connections) cannot deadlock whatever plan each gets.
_RENEW = (
    "UPDATE task SET lease_expires = $1 WHERE id IN (SELECT id FROM task WHERE id = ANY($2::bigint[])"
    " AND lease_owner = $3 AND status = 'running' ORDER BY id FOR UPDATE) RETURNING id"
)
_FLOW_REVISION = (
    "SELECT flow.deleted, flow_revision.revision, flow_revision.created FROM flow LEFT OUTER JOIN flow_revision"
    " ON flow_revision.flow_id = flow.id AND flow_revision.revision = {which} WHERE flow.id = $1"
)
_LATEST_REVISION = _FLOW_REVISION.format(which="flow.latest_revision")
_GIVEN_REVISION = _FLOW_REVISION.format(which="$2")
_DEFINITION = (
    "SELECT flow_revision.definition, flow.id FROM flow LEFT OUTER JOIN flow_revision"
    " ON flow_revision.flow_id = flow.id AND flow_revision.revision = $2 WHERE flow.id = $1"
)

_CACHE_GET = "SELECT output, cost, last_hit FROM node_cache WHERE key = $1"
_CACHE_TOUCH = "UPDATE node_cache SET last_hit = $2 WHERE key = $1"
_CACHE_UPSERT = (
    "INSERT INTO node_cache (key, node_type, output, cost, size, created, last_hit)"
    " VALUES ($1, $2, $3::json, $4, $5, $6, $6) ON CONFLICT (key) DO UPDATE SET node_type = excluded.node_type,"
    " output = excluded.output, cost = excluded.cost, size = excluded.size, last_hit = excluded.last_hit"
)
# One filler at a time: two evictions deleting overlapping rows in different orders (or one behind
# another's upsert) would deadlock. An arbitrary id of "the cache filler".
_CACHE_FILL_LOCK = "SELECT pg_advisory_xact_lock(7270561)"
_CACHE_TOTAL = "SELECT COALESCE(SUM(size), 0) FROM node_cache"
_CACHE_OLDEST = "SELECT key, size FROM node_cache ORDER BY last_hit, key LIMIT $1"
_CACHE_DELETE = "DELETE FROM node_cache WHERE key = ANY($1::varchar[])"
EVICT_PAGE = 100


def _event_arrays(events: Sequence[EventBatch]) -> list[list[Any]]:
    """``events`` as the 6 column arrays of ``_EVENT_ARRAYS``."""
    columns = list(zip(*rows.event_params(events), strict=True))
    return [list(column) for column in columns] if columns else [[] for _ in range(rows.EVENT_EPOCH + 1)]


def _run_rows(params: Sequence[tuple[Any, ...]]) -> str:
    """``run_params`` rows as ``_RUN_ROWS``'s one JSON array (one row per run)."""
    return codec.dumps_str(rows.last_per_run(params))


WAKE_GAP_S = 0.002
"""Wake-ups queued while one is being sent go out together, this long after it."""


class _WakeUps:
    """``NOTIFY graph_runtime_work`` after tasks were queued, as a statement of its own: at most one
    in flight, what is queued meanwhile sharing the next.

    Not in the insert's transaction: a ``NOTIFY`` in a writing transaction takes a database-wide
    lock held through the commit's WAL flush, so every execute's commit waited for the one
    before (eight connections: 4,100 commits/s with it, 8,200 without). A notify-only statement
    writes no WAL and holds it a moment. A process that dies between its insert and the notice
    leaves the task to the workers' fallback poll (:data:`graph_runtime.scheduler.IDLE_POLL_WITH_WAKEUPS_S`).
    """

    def __init__(self, pool: PgPool) -> None:
        self._pool = pool
        self._sending: asyncio.Task[None] | None = None
        self._again = False

    def send(self) -> None:
        if self._sending is not None and not self._sending.done():
            self._again = True
            return
        self._sending = asyncio.get_running_loop().create_task(self._send(), name="wake-workers")

    async def _send(self) -> None:
        while True:
            self._again = False
            try:
                async with self._pool.connection() as conn:
                    await conn.execute(_WAKE)
            except Exception as exc:  # the database is away: the workers' poll finds the task
                log.debug("wake-up not sent: %s", exc, extra={"action": "wakeup_failed"})
            if not self._again:
                return
            await asyncio.sleep(WAKE_GAP_S)

    async def close(self) -> None:
        if self._sending is not None:
            self._sending.cancel()
            await asyncio.gather(self._sending, return_exceptions=True)


class PgHotPath:
    """:class:`storage.hot_path.HotPath` on PostgreSQL."""

    write_lock = nullcontext()  # row locks and SKIP LOCKED do the work

    def __init__(self, pool: PgPool) -> None:
        self._pool = pool
        self._wake_ups = _WakeUps(pool)

    def wake_workers(self) -> None:
        self._wake_ups.send()

    async def create_task(self, values: dict[str, Any], node_ids: Sequence[str], if_latest: bool = False) -> int | None:
        key = values["idempotency_key"]
        try:
            async with self._pool.connection() as conn:
                row = await conn.fetchrow(
                    _CREATES[key is not None, if_latest], values["flow_id"], values["revision"],
                    rows.json_text(values["data"]), values["created"], key, values["request_fingerprint"],
                    values["key_id"], values["mode"], values["parent_id"], list(node_ids), values["watcher"],
                    values["status"], values["claims"], values["started"], values["lease_owner"], values["lease_expires"])
        except IntegrityViolation:
            # The only constraint a new task can break is the foreign key to the flow revision.
            raise errors.RevisionNotFound(f"flow {values['flow_id']!r} has no revision {values['revision']}") from None
        return None if row is None else int(row[0])

    async def earlier_task(self, flow_id: str, key: str) -> tuple[Task, str | None] | None:
        async with self._pool.connection() as conn:
            row = await conn.fetchrow(_TASK_BY_KEY, flow_id, key)
            if row is None:
                return None
            nodes = await self._runs(conn, [row[0]], items=True)
        return _CODEC.task(row, nodes.get(row[0], {})), row[rows.FINGERPRINT]

    async def get_task(self, task_id: int, items: bool) -> Task | None:
        async with self._pool.connection() as conn:
            row = await conn.fetchrow(_TASK_BY_ID, task_id)
            if row is None:
                return None
            nodes = await self._runs(conn, [task_id], items=items)
        return _CODEC.task(row, nodes.get(task_id, {}))

    async def claim_tasks(self, worker: str, lease_s: float, limit: int, pools: Sequence[str]) -> list[Task]:
        now = convert.utcnow()
        args: tuple[Any, ...] = (now, worker, now + timedelta(seconds=lease_s), limit)
        async with self._pool.connection() as conn:
            if pools:
                found = await conn.fetch(_CLAIM_QUEUED_OR_PARKED, *args, list(pools))
            else:
                found = await conn.fetch(_CLAIM_QUEUED, *args)
            return await self._claimed(conn, sorted(found, key=lambda row: row[0]))

    async def claim_task(self, task_id: int, worker: str, lease_s: float) -> Task | None:
        now = convert.utcnow()
        async with self._pool.connection() as conn:
            row = await conn.fetchrow(_CLAIM_ONE, now, worker, now + timedelta(seconds=lease_s), task_id)
            return None if row is None else (await self._claimed(conn, [row]))[0]

    async def _claimed(self, conn: Any, claimed: Sequence[Any]) -> list[Task]:
        # Node runs are written only after a claim: a first claim has none to read.
        resumed = [row[0] for row in claimed if row[rows.CLAIMS] > 1]
        nodes = await self._runs(conn, resumed, items=True) if resumed else {}
        return [_CODEC.task(row, nodes.get(row[0], {})) for row in claimed]

    async def _runs(self, conn: Any, task_ids: list[int], *, items: bool) -> dict[int, dict[str, NodeRun]]:
        return _CODEC.runs_by_task(await conn.fetch(_RUNS_WITH_ITEMS if items else _RUNS_WITHOUT_ITEMS, task_ids))

    async def save_runs(self, runs: Sequence[tuple[int, NodeRun]], leases: Mapping[int, Lease],
                        events: Sequence[EventBatch] = ()) -> Fenced:
        run_rows = await encoded_as(_CODEC, runs, _run_rows) if runs else None
        event_rows = _event_arrays(events) if events else None
        refused: Sequence[int] = ()
        kept_out: Any = None  # the event batches fenced off: [task ids], [epochs]
        try:
            # Runs and events in one transaction when there are both; either alone is one statement.
            opened = self._pool.transaction() if event_rows and run_rows is not None else self._pool.connection()
            async with opened as conn:
                if run_rows is not None and not leases:
                    await conn.execute(_SAVE, run_rows)
                elif run_rows is not None:
                    fenced = list(leases)
                    refused = await conn.fetchval(_SAVE_FENCED, run_rows, fenced, [leases[i].worker for i in fenced],
                                                  [leases[i].epoch for i in fenced])
                if event_rows:
                    kept_out = await conn.fetchrow(_APPEND_EVENTS, *event_rows)
        except IntegrityViolation:
            raise errors.TaskNotFound("a node run names a task that does not exist") from None
        batches = frozenset(zip(kept_out[0], kept_out[1], strict=True)) if kept_out and kept_out[0] else frozenset()
        return Fenced(frozenset(refused or ()), batches) if refused or batches else NOTHING_FENCED

    async def events_since(self, cursors: Mapping[int, int]) -> list[TaskEvent]:
        async with self._pool.connection() as conn:
            found = await conn.fetch(_EVENTS_SINCE, list(cursors), list(cursors.values()))
        events: list[TaskEvent] = []
        for row in found:
            events += _CODEC.events(row, events[-1].seq if events and events[-1].task_id == row[0] else row[-1])
        return events

    async def last_event_seq(self, task_id: int) -> int:
        async with self._pool.connection() as conn:
            return int(await conn.fetchval(_LAST_EVENT, task_id) or 0)

    async def finish_task(self, task_id: int, outcome: TaskOutcome, runs: Sequence[NodeRun], lease: Lease | None,
                          events: Sequence[EventBatch] = ()) -> None:
        run_rows = await encoded_as(_CODEC, [(task_id, run) for run in runs], _run_rows)
        fence = (lease.worker, lease.epoch) if lease is not None else (None, None)
        async with self._pool.connection() as conn:
            changed, exists, _ = await conn.fetchrow(_FINISH, run_rows, *outcome_values(outcome, _CODEC), task_id,
                                                     *fence, *_event_arrays(events))
        outcome_raised("ok" if changed else "lost" if exists else "missing", task_id)

    async def park_task(self, task_id: int, pool: str, runs: Sequence[NodeRun], lease: Lease) -> None:
        run_rows = await encoded_as(_CODEC, [(task_id, run) for run in runs], _run_rows)
        async with self._pool.connection() as conn:
            changed, exists, _ = await conn.fetchrow(_PARK, run_rows, pool, task_id, lease.worker, lease.epoch)
        outcome_raised("ok" if changed else "lost" if exists else "missing", task_id)

    async def cancel_flag(self, task_id: int) -> bool | None:
        async with self._pool.connection() as conn:
            flag = await conn.fetchval(_CANCEL_FLAG, task_id)
        return None if flag is None else bool(flag)

    async def task_status(self, task_id: int) -> TaskStatus | None:
        async with self._pool.connection() as conn:
            found = await conn.fetchval(_TASK_STATUS, task_id)
        return None if found is None else TaskStatus(found)

    async def renew_leases(self, worker: str, task_ids: Sequence[int], lease_s: float) -> set[int]:
        async with self._pool.connection() as conn:
            found = await conn.fetch(_RENEW, convert.utcnow() + timedelta(seconds=lease_s), list(task_ids), worker)
        return {row[0] for row in found}

    async def flow_revision(self, flow_id: str, revision: int | None) -> tuple[bool, int | None, datetime | None] | None:
        async with self._pool.connection() as conn:
            if revision is None:
                row = await conn.fetchrow(_LATEST_REVISION, flow_id)
            else:
                row = await conn.fetchrow(_GIVEN_REVISION, flow_id, revision)
        return None if row is None else (bool(row[0]), row[1], rows.utc(row[2]))

    async def flow_definition(self, flow_id: str, revision: int) -> dict[str, Any]:
        async with self._pool.connection() as conn:
            row = await conn.fetchrow(_DEFINITION, flow_id, revision)
        if row is None:
            raise errors.FlowNotFound(f"no flow has the id {flow_id!r}")
        if row[0] is None:
            raise errors.RevisionNotFound(f"flow {flow_id!r} has no revision {revision}")
        return codec.loads(row[0])  # type: ignore[no-any-return]

    async def cache_get(self, key: str) -> tuple[str, float, datetime] | None:
        async with self._pool.connection() as conn:
            row = await conn.fetchrow(_CACHE_GET, key)
        return None if row is None else (row[0], row[1], rows.utc(row[2]))  # type: ignore[return-value]

    async def cache_touch(self, key: str, now: datetime) -> None:
        async with self._pool.connection() as conn:
            await conn.execute(_CACHE_TOUCH, key, now)

    async def cache_put(self, row: CacheRow, evict_to: int | None) -> int | None:
        async with self._pool.transaction() as conn:
            await conn.execute(_CACHE_FILL_LOCK)
            await conn.execute(_CACHE_UPSERT, *row)
            return None if evict_to is None else await _evict(conn, evict_to)

    async def cache_evict(self, max_bytes: int) -> int:
        async with self._pool.transaction() as conn:
            await conn.execute(_CACHE_FILL_LOCK)
            return await _evict(conn, max_bytes)

    async def close(self) -> None:
        await self._wake_ups.close()
        await self._pool.close()


async def _evict(conn: Any, max_bytes: int) -> int:
    """Delete least recently hit entries until their total is within ``max_bytes``; the total left."""
    total = int(await conn.fetchval(_CACHE_TOTAL))
    while total > max_bytes:
        doomed, total = evictable(await conn.fetch(_CACHE_OLDEST, EVICT_PAGE), total, max_bytes)
        if not doomed:
            break
        await conn.execute(_CACHE_DELETE, doomed)
    return total
