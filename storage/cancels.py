"""Cancelling tasks that no worker is running: a queued task, or one parked for a pool, ends
``cancelled`` at once; a running one is only flagged (its worker notices and stops it). In the
caller's transaction, on the SQLAlchemy side of the store (the API's cancel, a parent's end)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from graph_runtime.models import NodeStatus, TaskStatus
from storage import convert, task_rows
from storage.tables import node_run as run_t
from storage.tables import task as task_t

_QUEUED, _RUNNING, _CANCELLED = TaskStatus.QUEUED.value, TaskStatus.RUNNING.value, TaskStatus.CANCELLED.value

# Parked for a pool (SPEC §10): running, no worker, until a claimer serving the pool takes it.
_PARKED = sa.and_(task_t.c.status == _RUNNING, task_t.c.lease_owner.is_(None), task_t.c.pool.is_not(None))

CANCELLED_BEFORE_START = {"node_id": None, "code": "cancelled", "message": "cancelled before it started"}
"""The ``error`` of a task cancelled while it was still queued."""


async def cancel_descendants(conn: AsyncConnection, parent_id: int) -> list[int]:
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
        parked = await cancel_parked(conn, below)
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


async def cancel_parked(conn: AsyncConnection, which: sa.ColumnElement[bool]) -> list[int]:
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
