"""Task rows for the repository (SQLAlchemy path): building, reading and idempotency lookups."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from graph_runtime import errors
from graph_runtime.models import Claim, Lease, NodeRun, Task, TaskRequest, TaskStatus
from storage import convert
from storage.tables import node_run as run_t
from storage.tables import task as task_t

_QUEUED, _RUNNING = TaskStatus.QUEUED.value, TaskStatus.RUNNING.value

# Each task's node runs in start order (re-sorted in Python: node ids follow the database's collation).
RUNS_OF_TASKS = (
    sa.select(run_t)
    .where(run_t.c.task_id.in_(sa.bindparam("task_ids", expanding=True)))
    .order_by(run_t.c.task_id, run_t.c.started.asc().nulls_last(), run_t.c.node_id)
)
# What a task view lists: the flow's nodes, not a map's item runs (``map1[3]``), which its row summarises.
NOT_ITEM_RUN = run_t.c.node_id.not_like("%]")
NODE_RUNS_OF_TASKS = RUNS_OF_TASKS.where(NOT_ITEM_RUN)
TASK_BY_ID = sa.select(task_t).where(task_t.c.id == sa.bindparam("task_id", type_=task_t.c.id.type))


def new_task_values(
    flow_id: str,
    revision: int,
    request: TaskRequest,
    idempotency_key: str | None,
    fingerprint: str | None,
    key_id: str | None,
    parent_id: int | None = None,
    watcher: str | None = None,
    claim: Claim | None = None,
) -> dict[str, Any]:
    """A new task's row: queued, or running under ``claim``'s lease from its first moment."""
    created = convert.utcnow()
    return {
        "flow_id": flow_id,
        "revision": revision,
        "status": _QUEUED if claim is None else _RUNNING,
        "data": request.as_data(),
        "created": created,
        "started": None if claim is None else created,
        "lease_owner": None if claim is None else claim.worker,
        "lease_expires": None if claim is None else created + timedelta(seconds=claim.lease_s),
        "cancel_requested": False,
        "claims": 0 if claim is None else 1,
        "idempotency_key": idempotency_key,
        "request_fingerprint": fingerprint,
        "key_id": key_id,
        "mode": request.mode,
        "parent_id": parent_id,
        "watcher": watcher,
    }


def new_task(task_id: int, values: dict[str, Any], request: TaskRequest) -> Task:
    """The task :func:`new_task_values` made, as inserted."""
    claimed = values["lease_owner"] is not None
    return Task(
        id=task_id,
        flow_id=values["flow_id"],
        revision=values["revision"],
        request=request,
        status=TaskStatus.RUNNING if claimed else TaskStatus.QUEUED,
        created=values["created"],
        started=values["started"],
        claims=values["claims"],
        lease=Lease(values["lease_owner"], 1) if claimed else None,
        parent_id=values["parent_id"],
    )


def key_conflict(key: str | None, flow_id: str, task_id: int) -> errors.IdempotencyConflict:
    return errors.IdempotencyConflict(
        f"the idempotency key {key!r} was already used on flow {flow_id!r} with another request (task {task_id})"
    )


async def update_returning(conn: AsyncConnection, update: sa.Update) -> sa.Row[Any] | None:
    return (await conn.execute(update.returning(*task_t.c))).first()


async def node_runs(conn: AsyncConnection, task_ids: list[int], *, items: bool = True) -> dict[int, dict[str, NodeRun]]:
    """The node runs of these tasks in one query, each task's in the order they started; without
    map items' runs unless ``items`` (a resume needs them, a view does not)."""
    if not task_ids:
        return {}
    query = RUNS_OF_TASKS if items else NODE_RUNS_OF_TASKS
    return convert.node_runs_by_task(await conn.execute(query, {"task_ids": task_ids}))
