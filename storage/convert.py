"""Conversions between table rows and the records the rest of graph-runtime uses."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import Row

from graph_runtime.models import NodeRun, Task, start_order_key
from storage import rows


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
    """A :class:`Task` from a ``task`` row of a SQLAlchemy query (the API side) and its node runs."""
    return rows.DECODED.task(tuple(getattr(row, name) for name in rows.TASK_COLUMNS), nodes)


def node_run(row: Row[Any]) -> NodeRun:
    """A :class:`NodeRun` from a ``node_run`` row of a SQLAlchemy query."""
    return rows.DECODED.node_run(tuple(getattr(row, name) for name in rows.RUN_COLUMNS))


def node_runs_by_task(rows: Iterable[Row[Any]]) -> dict[int, dict[str, NodeRun]]:
    """Node runs grouped by task id, each group in start order (:func:`start_order_key`)."""
    grouped: dict[int, list[NodeRun]] = {}
    for row in rows:
        grouped.setdefault(row.task_id, []).append(node_run(row))
    # Sorted here too: the database's ORDER BY follows its collation for node ids.
    return {task_id: {run.node_id: run for run in sorted(runs, key=start_order_key)} for task_id, runs in grouped.items()}


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
