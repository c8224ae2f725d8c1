"""The repository: flows, tasks, node runs and keys on SQLite or PostgreSQL.

It implements :class:`graph_runtime.ports.TaskStore` for the executor, and the reads and writes
the HTTP API and CLI need. Every call is one short transaction made of SQLAlchemy Core
statements; nothing returned holds a connection or a SQLAlchemy object.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from graph_runtime import errors
from graph_runtime.models import Lease, NodeRun, NodeStatus, Task, TaskOutcome, TaskRequest, TaskStatus
from nodes import codec
from storage import convert, migrations, task_rows
from storage import sqlite_inline as lite_inline
from storage import sqlite_statements as lite
from storage.convert import ApiKeyRecord
from storage.errors import SchemaNotCurrent
from storage.node_cache import NodeCacheMethods
from storage.repository_flows import FlowMethods
from storage.repository_keys import KeyMethods
from storage.repository_leases import LeaseMethods
from storage.secrets import SecretMethods
from storage.tables import node_run as run_t
from storage.tables import task as task_t
from storage.task_history import TaskHistoryMethods
from storage.wakeups import notify_work

__all__ = ["CANCELLED_BEFORE_START", "ApiKeyRecord", "Repository"]

_QUEUED, _RUNNING, _CANCELLED = TaskStatus.QUEUED.value, TaskStatus.RUNNING.value, TaskStatus.CANCELLED.value

# Hot statements, built once (SQLAlchemy still caches their compiled form per dialect).
_NOW = sa.bindparam("now", type_=task_t.c.started.type)
_TASK_ID = sa.bindparam("task_id", type_=task_t.c.id.type)
_WORKER = sa.bindparam("worker", type_=task_t.c.lease_owner.type)
_EXPIRES = sa.bindparam("expires", type_=task_t.c.lease_expires.type)
_CLAIM_ONE = (
    sa.update(task_t)
    .where(task_t.c.id == _TASK_ID, task_t.c.status == _QUEUED)
    .values(status=_RUNNING, started=_NOW, claims=task_t.c.claims + 1, lease_owner=_WORKER, lease_expires=_EXPIRES)
    .returning(*task_t.c)
)
_LIMIT = sa.bindparam("limit", type_=sa.Integer())
_POOLS = sa.bindparam("pools", expanding=True, type_=task_t.c.pool.type)
# Parked for a pool (SPEC §10): running, no worker, until a claimer serving the pool takes it.
_PARKED = sa.and_(task_t.c.status == _RUNNING, task_t.c.lease_owner.is_(None), task_t.c.pool.is_not(None))
_CLAIMABLE = (
    task_t.c.status == _QUEUED,
    sa.or_(task_t.c.status == _QUEUED,
           sa.and_(task_t.c.status == _RUNNING, task_t.c.lease_owner.is_(None), task_t.c.pool.in_(_POOLS))),
)
# A batch claim, oldest first. A parked task keeps ``started`` and loses its pool; every claim is a
# new fencing epoch (claims + 1). PostgreSQL: concurrent claimers skip each other's rows.
_CLAIM_MANY, _CLAIM_MANY_POOLS = (
    sa.update(task_t)
    .where(task_t.c.id.in_(
        sa.select(task_t.c.id).where(claimable).order_by(task_t.c.id).limit(_LIMIT)
        .with_for_update(skip_locked=True).scalar_subquery()))
    .values(status=_RUNNING, started=sa.func.coalesce(task_t.c.started, _NOW), claims=task_t.c.claims + 1,
            lease_owner=_WORKER, lease_expires=_EXPIRES, pool=None)
    .returning(*task_t.c)
    for claimable in _CLAIMABLE
)

CANCELLED_BEFORE_START = {"node_id": None, "code": "cancelled", "message": "cancelled before it started"}
"""The ``error`` of a task cancelled while it was still queued."""


class Repository(FlowMethods, KeyMethods, LeaseMethods, NodeCacheMethods, SecretMethods, TaskHistoryMethods):
    """Persistence for graph-runtime; implements :class:`graph_runtime.ports.TaskStore`; its
    output cache is :class:`storage.node_cache.StoredOutputCache` over it.

    Args:
        engine: from :func:`storage.engine.create_engine`, with the schema created. The
            repository does not own it: dispose of it with :func:`storage.engine.dispose`.

    Every method raises :class:`graph_runtime.errors.StoreUnavailable` when the database is
    unreachable or stays locked, and :class:`storage.errors.StorageError` for anything else
    the database refuses.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__(engine)
        node_runs = self._insert(run_t)
        # Prepared once: executed with a list of parameter sets, it upserts many runs in one go.
        self._upsert_runs = node_runs.on_conflict_do_update(
            index_elements=[run_t.c.task_id, run_t.c.node_id],
            set_={c.name: node_runs.excluded[c.name] for c in run_t.c if not c.primary_key},
        )

    async def ping(self) -> None:
        """Check that the database answers, with the schema this code uses.

        Raises:
            errors.StoreUnavailable: it does not.
            storage.errors.SchemaNotCurrent: its schema is another version (a newer release
                upgraded it while this process runs, or an upgrade is under way).
        """
        async with self._read() as conn:
            found = (await conn.execute(_SCHEMA_VERSION)).scalar()
        if found != migrations.head():
            raise SchemaNotCurrent(f"the database's schema is at version {found or 'none'}; this process "
                                   f"runs version {migrations.head()}: restart it with the release that matches")

    # -- tasks: the API's side ---------------------------------------------------------------

    async def create_task(
        self,
        flow_id: str,
        revision: int,
        request: TaskRequest,
        *,
        idempotency_key: str | None = None,
        fingerprint: str | None = None,
        key_id: str | None = None,
        node_ids: Sequence[str] = (),
        parent_id: int | None = None,
    ) -> tuple[Task, bool]:
        """Queue a task, or find the one created before with the same idempotency key.

        Args:
            flow_id: the flow to run.
            revision: its revision (must exist).
            request: the selected subgraph and settings.
            idempotency_key: the client's key; unique per flow.
            fingerprint: identifies the request, so a reused key with another request is caught.
            key_id: the server key that submitted it.
            node_ids: the run set, stored as ``pending`` node runs so a poll shows every node at once.
            parent_id: the task whose subflow or map node starts this one.

        Returns:
            ``(task, True)`` for a new queued task, ``(earlier task, False)`` when the key was
            already used with the same fingerprint.

        Raises:
            errors.IdempotencyConflict: the key was used on this flow with another fingerprint.
            errors.RevisionNotFound: the flow has no such revision.
        """
        values = task_rows.queued_task_values(flow_id, revision, request, idempotency_key, fingerprint, key_id,
                                              parent_id)
        pending = [NodeRun(node_id) for node_id in node_ids]
        if self._inline is not None:
            return await self._create_task_inline(values, request, pending)
        async with self._write() as conn:
            task_id = await self._insert_task(conn, values)
            if task_id is None:
                earlier = await task_rows.earlier_task(conn, flow_id, idempotency_key, fingerprint)
                assert earlier is not None, "the insert conflicted, so the row exists"
                return earlier, False
            if pending:
                await self._upsert(conn, task_id, pending)
            await notify_work(conn)  # delivered when this transaction commits: idle workers claim it at once
        task = task_rows.new_task(task_id, values, request)
        task.nodes = {run.node_id: run for run in pending}
        return task, True

    async def _create_task_inline(self, values: dict[str, Any], request: TaskRequest,
                                  pending: list[NodeRun]) -> tuple[Task, bool]:
        assert self._inline is not None
        key = values["idempotency_key"]
        params = (values["flow_id"], values["revision"], lite.json_text(values["data"]), lite.dt(values["created"]),
                  key, values["request_fingerprint"], values["key_id"], values["mode"], values["parent_id"])
        node_ids = [run.node_id for run in pending]
        try:
            task_id = await self._inline.write(lambda c: lite.create_task_work(c, params, key is not None, node_ids))
        except sqlite3.IntegrityError:
            raise errors.RevisionNotFound(f"flow {values['flow_id']!r} has no revision {values['revision']}") from None
        if task_id is None:
            earlier = await self.find_idempotent_task(values["flow_id"], key, values["request_fingerprint"])
            assert earlier is not None, "the insert conflicted, so the row exists"
            return earlier, False
        task = task_rows.new_task(task_id, values, request)
        task.nodes = {run.node_id: run for run in pending}
        return task, True

    async def find_idempotent_task(self, flow_id: str, idempotency_key: str, fingerprint: str) -> Task | None:
        """The task created before with this key on this flow, or None.

        Raises:
            errors.IdempotencyConflict: the key was used with another fingerprint.
        """
        if self._inline is not None:
            found = await self._inline.read(lambda c: lite.earlier_task_work(c, flow_id, idempotency_key))
            if found is None:
                return None
            if found[1] != fingerprint:
                raise task_rows.key_conflict(idempotency_key, flow_id, found[0].id)
            return found[0]
        async with self._read() as conn:
            return await task_rows.earlier_task(conn, flow_id, idempotency_key, fingerprint)

    async def _insert_task(self, conn: AsyncConnection, values: dict[str, Any]) -> int | None:
        # ON CONFLICT DO NOTHING on the (flow_id, idempotency_key) constraint: a concurrent
        # create with the same key waits for the other to commit, then inserts nothing.
        insert = self._insert(task_t).values(values)
        if values["idempotency_key"] is not None:
            insert = insert.on_conflict_do_nothing(index_elements=[task_t.c.flow_id, task_t.c.idempotency_key])
        try:
            return (await conn.execute(insert.returning(task_t.c.id))).scalar_one_or_none()
        except sa_exc.IntegrityError:
            # The only other constraint is the foreign key to the flow revision.
            raise errors.RevisionNotFound(f"flow {values['flow_id']!r} has no revision {values['revision']}") from None

    async def get_task(self, task_id: int, *, items: bool = False) -> Task:
        """The task with its node runs; its map items' runs (``map1[3]``) only if ``items``: the
        map node's own run summarises them, and a poll of a 1,000-item map stays as small as any.

        Raises:
            errors.TaskNotFound: no task has this id.
        """
        if self._inline is not None:
            found = await self._inline.read(lambda c: lite.task_work(c, task_id, items))
            if found is None:
                raise errors.TaskNotFound(f"no task has the id {task_id}")
            return found
        async with self._read() as conn:
            return await task_rows.load_task(conn, task_id, items=items)

    async def count_tasks(self, status: TaskStatus | None = None) -> int:
        """How many tasks there are (in ``status``, if given)."""
        query = sa.select(sa.func.count()).select_from(task_t)
        if status is not None:
            query = query.where(task_t.c.status == TaskStatus(status).value)
        async with self._read() as conn:
            return (await conn.execute(query)).scalar_one()

    async def request_cancel(self, task_id: int) -> Task:
        """Cancel a task: a queued one, or one parked for a pool, ends ``cancelled`` now; a running
        one is flagged.

        The runtime notices the flag (:meth:`is_cancel_requested`) and stops the task. Atomic
        against a concurrent claim: the task is either cancelled before it starts or flagged.

        Raises:
            errors.TaskNotFound: no task has this id.
            errors.TaskEnded: the task has already ended.
        """
        async with self._write() as conn:
            row = await task_rows.update_returning(
                conn,
                sa.update(task_t)
                .where(task_t.c.id == task_id, task_t.c.status == _QUEUED)
                .values(status=_CANCELLED, finished=convert.utcnow(), execution_cost=0.0, error=CANCELLED_BEFORE_START),
            )
            if row is None and await _cancel_parked(conn, task_t.c.id == task_id):
                row = (await conn.execute(task_rows.TASK_BY_ID, {"task_id": task_id})).first()
            if row is None:
                row = await task_rows.update_returning(
                    conn,
                    sa.update(task_t)
                    .where(task_t.c.id == task_id, task_t.c.status == _RUNNING)
                    .values(cancel_requested=True),
                )
            if row is None:
                status = (await conn.execute(sa.select(task_t.c.status).where(task_t.c.id == task_id))).scalar()
                if status is None:
                    raise errors.TaskNotFound(f"no task has the id {task_id}")
                raise errors.TaskEnded(f"task {task_id} has already ended ({status})")
            await _cancel_descendants(conn, task_id)
            nodes = await task_rows.node_runs(conn, [task_id], items=False)
        return convert.task(row, nodes.get(task_id, {}))

    async def cancel_children(self, parent_id: int) -> list[int]:
        """Cancel every unfinished descendant of ``parent_id`` (its subflows' and maps' child tasks,
        and theirs): queued ones end ``cancelled`` now, running ones are flagged. Returns their ids."""
        async with self._write() as conn:
            return await _cancel_descendants(conn, parent_id)

    # -- tasks: the executor's side (graph_runtime.ports.TaskStore) -------------------------

    async def claim_tasks(self, worker: str, lease_s: float, limit: int,
                          pools: frozenset[str] = frozenset()) -> list[Task]:
        """Claim up to ``limit`` tasks in one statement, oldest first: queued ones, and running ones
        parked for one of ``pools`` (:meth:`park_task`); each comes back running under ``worker``'s
        lease, with the node runs it had.

        Safe with several workers and several processes: each task is claimed once (PostgreSQL:
        ``FOR UPDATE SKIP LOCKED``; SQLite: one UPDATE under the write lock). Claiming a parked
        task is a new fencing epoch (``claims`` + 1) but no interruption; ``started`` is kept.
        """
        if limit <= 0:
            return []
        wanted = sorted(pools)
        if self._inline is not None:
            if not await self._inline.read(lambda c: lite.any_claimable_work(c, wanted)):
                # The scheduler looks after every task end and every submit; most looks find nothing,
                # and a read is far cheaper than an empty write transaction.
                return []
            now, expires = _lease_times(lease_s)
            return await self._inline.write(lambda c: lite.claim_many_work(c, limit, wanted, now, worker, expires))
        now, expires = _lease_times(lease_s)
        values: dict[str, Any] = {"now": now, "worker": worker, "expires": expires, "limit": limit}
        if wanted:
            values["pools"] = wanted
        async with self._write() as conn:
            rows = sorted((await conn.execute(_CLAIM_MANY_POOLS if wanted else _CLAIM_MANY, values)).all(),
                          key=lambda row: row.id)
            # Node runs are written only after a claim: a first claim has none to read.
            nodes = await task_rows.node_runs(conn, [row.id for row in rows if row.claims > 1])
        return [convert.task(row, nodes.get(row.id, {})) for row in rows]

    async def claim_next_task(self, worker: str = "local", lease_s: float = 30.0) -> Task | None:
        """The oldest queued task, claimed as :meth:`claim_tasks` claims; None if there is none."""
        claimed = await self.claim_tasks(worker, lease_s, 1)
        return claimed[0] if claimed else None

    async def claim_task(self, task_id: int, worker: str = "local", lease_s: float = 30.0) -> Task | None:
        """Claim this task if it is queued (``graph-runtime run`` executes exactly its own task).

        Returns:
            The task, now running, with its node runs; None if it was not queued (another
            worker claimed it, or it was cancelled).

        Raises:
            errors.TaskNotFound: no task has this id.
        """
        now, expires = _lease_times(lease_s)
        if self._inline is not None:
            claimed = await self._inline.write(lambda c: lite.claim_work(c, task_id, now, worker, expires))
        else:
            values = {"task_id": task_id, "now": now, "worker": worker, "expires": expires}
            async with self._write() as conn:
                row = (await conn.execute(_CLAIM_ONE, values)).first()
                nodes = await task_rows.node_runs(conn, [row.id]) if row is not None and row.claims > 1 else {}
            claimed = None if row is None else convert.task(row, nodes.get(row.id, {}))
        if claimed is None:
            await self.get_task(task_id)  # raises TaskNotFound for an unknown id
        return claimed

    async def park_task(self, task_id: int, pool: str, runs: Sequence[NodeRun], *, lease: Lease) -> None:
        """Hand the task over to a worker serving ``pool``: record ``runs`` and drop the lease, in one
        transaction. The task stays ``running`` with no worker until :meth:`claim_tasks` with that
        pool takes it; recovery never requeues it; a cancel ends it at once. Wakes idle workers.

        Raises:
            errors.TaskNotFound: no task has this id.
            errors.LeaseLost: ``lease`` is no longer the task's current one; nothing was written.
        """
        if self._inline is not None:
            params = await _encoded_off_loop([(task_id, run) for run in runs])
            outcome = await self._inline.write(lambda c: lite.park_work(c, task_id, pool, params, lease),
                                               size=lite.params_size(params))
            _raise_unless_ok(outcome, task_id)
            return
        async with self._write() as conn:
            result = await conn.execute(
                sa.update(task_t)
                .where(task_t.c.id == task_id, task_t.c.status == _RUNNING, task_t.c.lease_owner == lease.worker,
                       task_t.c.claims == lease.epoch)
                .values(pool=pool, lease_owner=None, lease_expires=None)
            )
            if result.rowcount == 0:
                await self._raise_fenced(conn, task_id)
            if runs:
                await self._upsert(conn, task_id, runs)
            await notify_work(conn)  # a worker serving the pool may be idle

    async def save_node_runs(self, task_id: int, runs: Sequence[NodeRun], *, lease: Lease | None = None) -> None:
        """Insert or update these node runs of ``task_id`` in one transaction.

        Raises:
            errors.TaskNotFound: no task has this id.
            errors.LeaseLost: ``lease`` is no longer the task's current one; nothing was written.
        """
        if not runs:
            return
        refused = await self.save_node_runs_many([(task_id, run) for run in runs], {task_id: lease} if lease else None)
        if refused:
            raise errors.LeaseLost(task_ids=refused)

    async def save_node_runs_many(self, rows: Sequence[tuple[int, NodeRun]],
                                  leases: Mapping[int, Lease] | None = None) -> frozenset[int]:
        """Insert or update node runs of several tasks in one transaction (group commit).

        The fence: rows of a task named in ``leases`` are written only if that lease is still the
        task's current one (running, same worker, same claim); a worker presumed dead whose
        task another worker resumed records nothing.

        Returns:
            The ids of the tasks whose rows were refused by the fence.

        Raises:
            errors.TaskNotFound: one of the tasks does not exist.
        """
        if not rows:
            return frozenset()
        fences = dict(leases or {})
        if self._inline is not None:
            params = await _encoded_off_loop([(task_id, run) for task_id, run in rows])
            try:
                return await self._inline.write(lambda c: lite.upsert_runs_work(c, params, fences),
                                                size=lite.params_size(params))
            except sqlite3.IntegrityError:
                raise errors.TaskNotFound("a node run names a task that does not exist") from None
        async with self._write() as conn:
            refused = frozenset(fences) - await self._held(conn, fences)
            values = [convert.node_run_values(task_id, run) for task_id, run in rows if task_id not in refused]
            try:
                if values:
                    await conn.execute(self._upsert_runs, values)
            except sa_exc.IntegrityError:
                raise errors.TaskNotFound("a node run names a task that does not exist") from None
        return refused

    async def _held(self, conn: AsyncConnection, leases: Mapping[int, Lease]) -> set[int]:
        """Which of these tasks still run under exactly these leases; their rows stay locked
        (PostgreSQL: FOR SHARE, in id order) until the transaction ends, so a requeue cannot
        slip in between the check and the write."""
        if not leases:
            return set()
        query = (
            sa.select(task_t.c.id, task_t.c.lease_owner, task_t.c.claims)
            .where(task_t.c.id.in_(list(leases)), task_t.c.status == _RUNNING)
            .order_by(task_t.c.id)
            .with_for_update(read=True)
        )
        rows = (await conn.execute(query)).all()
        return {row.id for row in rows if leases[row.id] == Lease(row.lease_owner, row.claims)}

    async def finish_task(self, task_id: int, outcome: TaskOutcome, runs: Sequence[NodeRun], *,
                          lease: Lease | None = None) -> None:
        """Record the task's end and its last node-run changes in one transaction.

        Args:
            lease: the fence: the end is recorded only while this is the task's current lease.

        Raises:
            errors.TaskNotFound: no task has this id.
            errors.LeaseLost: ``lease`` is no longer the task's current one; nothing was written.
        """
        values = {
            "status": TaskStatus(outcome.status).value,
            "finished": outcome.finished,
            "execution_time": outcome.execution_time,
            "execution_cost": outcome.execution_cost,
            "result": outcome.result,
            "error": outcome.error.as_dict() if outcome.error else None,
            "lease_owner": None,
            "lease_expires": None,
        }
        if self._inline is not None:
            return await self._finish_inline(task_id, values, runs, lease)
        async with self._write() as conn:
            update = sa.update(task_t).where(task_t.c.id == task_id)
            if lease is not None:
                update = update.where(task_t.c.status == _RUNNING, task_t.c.lease_owner == lease.worker,
                                      task_t.c.claims == lease.epoch)
            result = await conn.execute(update.values(values))
            if result.rowcount == 0:
                await self._raise_fenced(conn, task_id)
            if runs:
                await self._upsert(conn, task_id, runs)

    async def _raise_fenced(self, conn: AsyncConnection, task_id: int) -> None:
        """A fenced update changed nothing: TaskNotFound, or LeaseLost."""
        exists = (await conn.execute(sa.select(task_t.c.id).where(task_t.c.id == task_id))).first()
        _raise_unless_ok("lost" if exists is not None else "missing", task_id)

    async def _finish_inline(self, task_id: int, values: dict[str, Any], runs: Sequence[NodeRun],
                             lease: Lease | None) -> None:
        assert self._inline is not None
        row = (values["status"], lite.dt(values["finished"]), values["execution_time"], values["execution_cost"],
               lite.json_text(values["result"]), lite.json_text(values["error"]), task_id)
        params = await _encoded_off_loop([(task_id, run) for run in runs])
        size = len(row[4] or "") + lite.params_size(params)
        _raise_unless_ok(await self._inline.write(lambda c: lite.finish_work(c, row, params, lease), size=size), task_id)

    async def is_cancel_requested(self, task_id: int) -> bool:
        """Whether someone asked to cancel ``task_id``.

        Raises:
            errors.TaskNotFound: no task has this id.
        """
        if self._inline is not None:
            flag = await self._inline.read(lambda c: lite.cancel_flag_work(c, task_id))
        else:
            async with self._read() as conn:
                flag = (
                    await conn.execute(sa.select(task_t.c.cancel_requested).where(task_t.c.id == task_id))
                ).scalar_one_or_none()
        if flag is None:
            raise errors.TaskNotFound(f"no task has the id {task_id}")
        return flag

    async def requeue_interrupted(self) -> int:
        """Put every ``running`` task back in the queue and return how many there were (not a task
        parked for a pool: no process holds it).

        Call it at start-up, before any worker claims: a task left running belongs to a
        process that died. ``started`` is cleared (a queued task has not started; the claim
        that resumes it stamps it again, so ``execution_time`` covers the run that finished
        it). ``cancel_requested`` is kept, so the resuming worker cancels it at once.
        """
        async with self._write() as conn:
            result = await conn.execute(
                sa.update(task_t)
                .where(task_t.c.status == _RUNNING, task_t.c.pool.is_(None))  # a parked task has no process
                .values(status=_QUEUED, started=None, lease_owner=None, lease_expires=None,
                        interruptions=task_t.c.interruptions + 1)
            )
        return result.rowcount

    async def _upsert(self, conn: AsyncConnection, task_id: int, runs: Iterable[NodeRun]) -> None:
        try:
            await conn.execute(self._upsert_runs, [convert.node_run_values(task_id, run) for run in runs])
        except sa_exc.IntegrityError:
            # The only constraint a valid run can break is the foreign key to its task.
            raise errors.TaskNotFound(f"no task has the id {task_id}") from None


def _lease_times(lease_s: float) -> tuple[datetime, datetime]:
    """A claim's ``started`` stamp and its lease's expiry."""
    now = convert.utcnow()
    return now, now + timedelta(seconds=lease_s)


def _raise_unless_ok(outcome: str, task_id: int) -> None:
    """The answer of a fenced write: ``"ok"``, or ``"missing"`` / ``"lost"`` raised."""
    if outcome == "missing":
        raise errors.TaskNotFound(f"no task has the id {task_id}")
    if outcome == "lost":
        raise errors.LeaseLost(f"task {task_id} is no longer leased to this worker", task_ids=frozenset({task_id}))


async def _encoded_off_loop(rows: Sequence[tuple[int, NodeRun]]) -> list[tuple[Any, ...]]:
    """``run_params`` of these rows; encoded on a thread when their outputs are large, so a
    multi-megabyte output never holds the event loop while it becomes JSON text."""
    if codec.size_exceeds([run.output for _, run in rows], lite_inline.THREAD_ABOVE_BYTES):
        return await asyncio.to_thread(lambda: [lite.run_params(task_id, run) for task_id, run in rows])
    return [lite.run_params(task_id, run) for task_id, run in rows]


_SCHEMA_VERSION = sa.text("SELECT max(version_num) FROM alembic_version")


async def _cancel_descendants(conn: AsyncConnection, parent_id: int) -> list[int]:
    """Cancel the unfinished tasks below ``parent_id``, level by level, in the caller's transaction."""
    cancelled: list[int] = []
    parents = [parent_id]
    while parents:
        below = task_t.c.parent_id.in_(parents)
        queued = await conn.execute(
            sa.update(task_t).where(below, task_t.c.status == _QUEUED)
            .values(status=_CANCELLED, finished=convert.utcnow(), execution_cost=0.0, error=CANCELLED_BEFORE_START)
            .returning(task_t.c.id)
        )
        parked = await _cancel_parked(conn, below)
        running = await conn.execute(
            sa.update(task_t).where(below, task_t.c.status == _RUNNING).values(cancel_requested=True)
            .returning(task_t.c.id)
        )
        parents = [*queued.scalars(), *parked, *running.scalars()]
        cancelled.extend(parents)
    return cancelled


def cancelled_while_parked(pool: str) -> dict[str, Any]:
    """The ``error`` of a task cancelled while it waited for a worker of ``pool``."""
    return {"node_id": None, "code": "cancelled", "message": f"cancelled while waiting for a worker of pool {pool}"}


_UNSTARTED = (NodeStatus.PENDING.value, NodeStatus.RUNNING.value)


async def _cancel_parked(conn: AsyncConnection, which: sa.ColumnElement[bool]) -> list[int]:
    """End the tasks parked for a pool among ``which`` as ``cancelled`` now, in the caller's
    transaction (no worker holds them to notice a flag); their ids. Their unfinished nodes end
    ``skipped``, as a task's end leaves them, and its cost is what its nodes cost."""
    parked = (await conn.execute(
        sa.select(task_t.c.id, task_t.c.pool, task_t.c.started).where(which, _PARKED)
        .order_by(task_t.c.id).with_for_update()  # a concurrent claim of the same task waits, then skips it
    )).all()
    finished = convert.utcnow()
    for row in parked:
        cost = (sa.select(sa.func.coalesce(sa.func.sum(run_t.c.cost), 0.0))
                .where(run_t.c.task_id == row.id, task_rows.NOT_ITEM_RUN).scalar_subquery())
        started = row.started or finished
        await conn.execute(
            sa.update(task_t).where(task_t.c.id == row.id)
            .values(status=_CANCELLED, finished=finished, execution_cost=cost, pool=None, error=cancelled_while_parked(row.pool),
                    execution_time=round((finished - started).total_seconds(), 6))
        )
        await conn.execute(
            sa.update(run_t).where(run_t.c.task_id == row.id, run_t.c.status.in_(_UNSTARTED))
            .values(status=NodeStatus.SKIPPED.value, waiting_for_pool=None)
        )
    return [row.id for row in parked]
