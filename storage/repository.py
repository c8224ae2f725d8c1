"""The repository: flows, tasks, node runs and keys on SQLite or PostgreSQL.

It implements :class:`graph_runtime.ports.TaskStore` for the executor, and the reads and writes
the HTTP API and CLI need. Every call is one short transaction made of SQLAlchemy Core
statements; nothing returned holds a connection or a SQLAlchemy object.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from graph_runtime import errors
from graph_runtime.models import Lease, NodeRun, NodeStatus, Task, TaskOutcome, TaskRequest, TaskStatus
from storage import convert, migrations, task_rows
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

__all__ = ["CANCELLED_BEFORE_START", "ApiKeyRecord", "Repository"]

_QUEUED, _RUNNING, _CANCELLED = TaskStatus.QUEUED.value, TaskStatus.RUNNING.value, TaskStatus.CANCELLED.value

# Parked for a pool (SPEC §10): running, no worker, until a claimer serving the pool takes it.
_PARKED = sa.and_(task_t.c.status == _RUNNING, task_t.c.lease_owner.is_(None), task_t.c.pool.is_not(None))

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
        task_id = await self._hot.create_task(values, node_ids)
        if task_id is None:
            assert idempotency_key is not None
            earlier = await self.find_idempotent_task(flow_id, idempotency_key, fingerprint)
            assert earlier is not None, "the insert conflicted, so the row exists"
            return earlier, False
        task = task_rows.new_task(task_id, values, request)
        task.nodes = {node_id: NodeRun(node_id) for node_id in node_ids}
        return task, True

    async def find_idempotent_task(self, flow_id: str, idempotency_key: str, fingerprint: str | None) -> Task | None:
        """The task created before with this key on this flow, or None.

        Raises:
            errors.IdempotencyConflict: the key was used with another fingerprint.
        """
        found = await self._hot.earlier_task(flow_id, idempotency_key)
        if found is None:
            return None
        if found[1] != fingerprint:
            raise task_rows.key_conflict(idempotency_key, flow_id, found[0].id)
        return found[0]

    async def get_task(self, task_id: int, *, items: bool = False) -> Task:
        """The task with its node runs; its map items' runs (``map1[3]``) only if ``items``: the
        map node's own run summarises them, and a poll of a 1,000-item map stays as small as any.

        Raises:
            errors.TaskNotFound: no task has this id.
        """
        found = await self._hot.get_task(task_id, items)
        if found is None:
            raise errors.TaskNotFound(f"no task has the id {task_id}")
        return found

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
        return await self._hot.claim_tasks(worker, lease_s, limit, sorted(pools))

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
        claimed = await self._hot.claim_task(task_id, worker, lease_s)
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
        await self._hot.park_task(task_id, pool, runs, lease)

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
        return await self._hot.save_runs(rows, leases or {})

    async def finish_task(self, task_id: int, outcome: TaskOutcome, runs: Sequence[NodeRun], *,
                          lease: Lease | None = None) -> None:
        """Record the task's end and its last node-run changes in one transaction, and drop its lease.

        Args:
            lease: the fence: the end is recorded only while this is the task's current lease.

        Raises:
            errors.TaskNotFound: no task has this id.
            errors.LeaseLost: ``lease`` is no longer the task's current one; nothing was written.
        """
        await self._hot.finish_task(task_id, outcome, runs, lease)

    async def is_cancel_requested(self, task_id: int) -> bool:
        """Whether someone asked to cancel ``task_id``.

        Raises:
            errors.TaskNotFound: no task has this id.
        """
        flag = await self._hot.cancel_flag(task_id)
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
