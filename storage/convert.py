"""Conversions between table rows and the records the rest of graph-runtime uses."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import Row

from graph_runtime.models import Lease, NodeRun, NodeStatus, RunError, Task, TaskRequest, TaskStatus, start_order_key


@dataclass(frozen=True)
class ApiKeyRecord:
    """A stored server key. Only a hash of the secret is kept; the token is never stored.

    Attributes:
        id: the key id (the part of the token before ``:``).
        name: a label chosen by whoever created it.
        scope: ``"admin"`` or ``"execute"``.
        secret_hash: the hash the HTTP layer computed from the secret.
        created: when the key was created (aware UTC).
        last_used: when it last authenticated a request (as recorded by ``touch_key``); None if never.
        revoked: whether it has been revoked (a revoked key authenticates nothing).
    """

    id: str
    name: str
    scope: str
    secret_hash: str
    created: datetime
    last_used: datetime | None
    revoked: bool


def utcnow() -> datetime:
    """The current time, aware UTC, with microseconds."""
    return datetime.now(UTC)


def task(row: Row[Any], nodes: dict[str, NodeRun]) -> Task:
    """A :class:`Task` from a ``task`` row and its node runs."""
    return Task(
        id=row.id,
        flow_id=row.flow_id,
        revision=row.revision,
        request=TaskRequest.from_data(row.data),
        status=TaskStatus(row.status),
        created=row.created,
        started=row.started,
        finished=row.finished,
        result=row.result,
        execution_time=row.execution_time,
        execution_cost=row.execution_cost,
        error=RunError.from_dict(row.error),
        nodes=nodes,
        claims=row.claims,
        interruptions=row.interruptions,
        lease=lease(row),
        parent_id=row.parent_id,
    )


def lease(row: Row[Any]) -> Lease | None:
    """The lease a ``task`` row is running under, or None when no worker holds it."""
    return Lease(row.lease_owner, row.claims) if row.lease_owner is not None and row.status == "running" else None


def node_run(row: Row[Any]) -> NodeRun:
    """A :class:`NodeRun` from a ``node_run`` row."""
    return NodeRun(
        node_id=row.node_id,
        status=NodeStatus(row.status),
        started=row.started,
        finished=row.finished,
        execution_time=row.execution_time,
        cost=row.cost,
        attempts=row.attempts,
        error=RunError.from_dict(row.error),
        output=row.output,
        cached=bool(row.cached),
        saved_cost=row.saved_cost,
        items=row.items,
        waiting_for_pool=row.waiting_for_pool,
    )


def node_runs_by_task(rows: Iterable[Row[Any]]) -> dict[int, dict[str, NodeRun]]:
    """Node runs grouped by task id, each group in start order (:func:`start_order_key`)."""
    grouped: dict[int, list[NodeRun]] = {}
    for row in rows:
        grouped.setdefault(row.task_id, []).append(node_run(row))
    # Sorted here too: the database's ORDER BY follows its collation for node ids.
    return {task_id: {run.node_id: run for run in sorted(runs, key=start_order_key)} for task_id, runs in grouped.items()}


def node_run_values(task_id: int, run: NodeRun) -> dict[str, Any]:
    """The ``node_run`` column values for ``run``."""
    return {
        "task_id": task_id,
        "node_id": run.node_id,
        "status": NodeStatus(run.status).value,
        "started": run.started,
        "finished": run.finished,
        "execution_time": run.execution_time,
        "cost": run.cost,
        "attempts": run.attempts,
        "error": run.error.as_dict() if run.error else None,
        "output": run.output,
        "cached": run.cached,
        "saved_cost": run.saved_cost,
        "items": run.items,
        "waiting_for_pool": run.waiting_for_pool,
    }


def api_key(row: Row[Any]) -> ApiKeyRecord:
    """An :class:`ApiKeyRecord` from an ``api_key`` row."""
    return ApiKeyRecord(
        id=row.id,
        name=row.name,
        scope=row.scope,
        secret_hash=row.secret_hash,
        created=row.created,
        last_used=row.last_used,
        revoked=row.revoked is not None,
    )
