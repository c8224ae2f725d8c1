"""What the HTTP API and the CLI need from the store beyond a worker's: flows stored and listed,
keys, secrets, the task history, counts and cancels. :class:`ApiStore` is all of it (a superset of
:class:`storage.task_store.WorkerStore`: the API creates and reads tasks too); these are the cold
queries, SQLAlchemy Core, the same on both engines.
"""

from __future__ import annotations

import sqlalchemy as sa

from graph_runtime import errors
from graph_runtime.models import Task, TaskStatus
from storage import cancels, convert, task_rows
from storage.cancels import CANCELLED_BEFORE_START
from storage.repository_flows import FlowMethods
from storage.repository_keys import KeyMethods
from storage.secrets import SecretMethods
from storage.tables import task as task_t
from storage.task_history import TaskHistoryMethods
from storage.task_store import WorkerStore

_QUEUED, _RUNNING, _CANCELLED = TaskStatus.QUEUED.value, TaskStatus.RUNNING.value, TaskStatus.CANCELLED.value


class ApiStore(FlowMethods, KeyMethods, SecretMethods, TaskHistoryMethods, WorkerStore):
    """The store as the HTTP API and the CLI use it: everything :class:`WorkerStore` does, and the
    API's own reads and writes. Same arguments and errors."""

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
            if row is None and await cancels.cancel_parked(conn, task_t.c.id == task_id):
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
            await cancels.cancel_descendants(conn, task_id)
            nodes = await task_rows.node_runs(conn, [task_id], items=False)
        return convert.task(row, nodes.get(task_id, {}))
