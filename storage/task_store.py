"""What a worker needs from the store: :class:`WorkerStore` implements
:class:`graph_runtime.ports.TaskStore` (claims, node runs, ends, hand-overs to a pool, leases) and
the output cache's store, all hot operations on the engine's one hot path (:mod:`storage.hot_path`).
A ``graph-runtime worker`` process needs nothing more; the API's side is :mod:`storage.api_store`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import sqlalchemy as sa

from graph_runtime import errors
from graph_runtime.events import EventBatch
from graph_runtime.models import NOTHING_FENCED, Claim, Fenced, Lease, NodeRun, Task, TaskOutcome, TaskRequest, TaskStatus
from storage import cancels, migrations, task_rows
from storage.errors import SchemaNotCurrent
from storage.node_cache import NodeCacheMethods
from storage.repository_flows import FlowReads
from storage.repository_leases import LeaseMethods
from storage.tables import task as task_t

_QUEUED, _RUNNING = TaskStatus.QUEUED.value, TaskStatus.RUNNING.value
_SCHEMA_VERSION = sa.text("SELECT max(version_num) FROM alembic_version")


class WorkerStore(FlowReads, LeaseMethods, NodeCacheMethods):
    """Tasks, node runs and leases as the executor and scheduler use them; implements
    :class:`graph_runtime.ports.TaskStore`, and its output cache is
    :class:`storage.node_cache.StoredOutputCache` over it.

    Args:
        engine: from :func:`storage.engine.create_engine`, with the schema created. The store
            does not own it: dispose of it with :func:`storage.engine.dispose`.

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
        wake: bool = True,
        watcher: str | None = None,
        claim: Claim | None = None,
        if_latest: bool = False,
    ) -> tuple[Task, bool]:
        """Queue a task (or, with ``claim``, create it running), or find the one created before with
        the same idempotency key.

        Args:
            flow_id: the flow to run.
            revision: its revision (must exist).
            request: the selected subgraph and settings.
            idempotency_key: the client's key; unique per flow.
            fingerprint: identifies the request, so a reused key with another request is caught.
            key_id: the server key that submitted it.
            node_ids: the run set, stored as ``pending`` node runs so a poll shows every node at once.
            parent_id: the task whose subflow or map node starts this one.
            wake: tell idle workers of every process (PostgreSQL's NOTIFY, just after the commit);
                False when this process's own scheduler takes it at once.
            watcher: the worker id of the process that waits for its end (``?wait``): on
                PostgreSQL a worker elsewhere ending it tells that process at once.
            claim: create it running, claimed by this worker (its first claim), not queued.
            if_latest: only if ``revision`` is still the flow's latest and the flow is not deleted
                (a revision this process saw earlier: ``get_flow(seen=True)``), checked in the insert.

        Returns:
            ``(task, True)`` for a new task (queued, or running under ``claim``), ``(earlier task, False)`` when the key was
            already used with the same fingerprint.

        Raises:
            errors.IdempotencyConflict: the key was used on this flow with another fingerprint.
            errors.RevisionNotFound: the flow has no such revision.
            errors.StaleRevision: with ``if_latest``, it is not the latest; nothing was written.
        """
        values = task_rows.new_task_values(flow_id, revision, request, idempotency_key, fingerprint, key_id,
                                              parent_id, watcher, claim)
        task_id = await self._hot.create_task(values, node_ids, if_latest)
        if task_id is None:
            earlier = None
            if idempotency_key is not None:
                earlier = await self.find_idempotent_task(flow_id, idempotency_key, fingerprint)
            if earlier is not None:
                return earlier, False
            if if_latest:
                raise errors.StaleRevision(f"flow {flow_id!r} has a revision after {revision}, or was deleted")
            raise AssertionError("nothing inserted, yet no key conflicted")
        if wake and claim is None:
            self._hot.wake_workers()
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

    async def task_status(self, task_id: int) -> TaskStatus:
        """The task's status, without its node runs (an event stream's opening).

        Raises:
            errors.TaskNotFound: no task has this id.
        """
        found = await self._hot.task_status(task_id)
        if found is None:
            raise errors.TaskNotFound(f"no task has the id {task_id}")
        return found

    async def cancel_children(self, parent_id: int) -> list[int]:
        """Cancel every unfinished descendant of ``parent_id`` (its subflows' and maps' child tasks,
        and theirs): queued ones end ``cancelled`` now, running ones are flagged. Returns their ids."""
        async with self._write() as conn:
            return await cancels.cancel_descendants(conn, parent_id)

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
        fenced = await self.save_node_runs_many([(task_id, run) for run in runs], {task_id: lease} if lease else None)
        if fenced.tasks:
            raise errors.LeaseLost(task_ids=fenced.tasks)

    async def save_node_runs_many(self, rows: Sequence[tuple[int, NodeRun]],
                                  leases: Mapping[int, Lease] | None = None,
                                  events: Sequence[EventBatch] = ()) -> Fenced:
        """Insert or update node runs of several tasks, and store task events, in one transaction
        (group commit). Each event batch is fenced by its own epoch (see ``graph_runtime.events``).

        The fence: rows of a task named in ``leases`` are written only if that lease is still the
        task's current one (running, same worker, same claim); a worker presumed dead whose
        task another worker resumed records nothing.

        Returns:
            What the fence kept out: the tasks whose rows were refused, the (task, epoch) of the
            event batches not stored.

        Raises:
            errors.TaskNotFound: one of the tasks does not exist.
        """
        if not rows and not events:
            return NOTHING_FENCED
        return await self._hot.save_runs(rows, leases or {}, events)

    async def finish_task(self, task_id: int, outcome: TaskOutcome, runs: Sequence[NodeRun], *,
                          lease: Lease | None = None, events: Sequence[EventBatch] = ()) -> None:
        """Record the task's end, its last node-run changes and ``events`` (its final event) in one
        transaction, and drop its lease.

        Args:
            lease: the fence: the end is recorded only while this is the task's current lease.

        Raises:
            errors.TaskNotFound: no task has this id.
            errors.LeaseLost: ``lease`` is no longer the task's current one; nothing was written.
        """
        await self._hot.finish_task(task_id, outcome, runs, lease, events)

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
