"""Task history: pages of task summaries that read only what they show.

A summary is a task without its large columns (``data``, ``result``) and without its node runs,
which are counted per status instead: the queries select only small columns, so a page of 200
summaries sends kilobytes whatever the tasks carry. ``include`` asks for the large parts; then
the page is cut at a byte budget, measured by the database before anything large is sent (the
sizes of at most ``SIZE_CHUNK - 1`` tasks past the cut are computed in vain, never sent).

On SQLite a row's columns after ``data`` and ``result`` sit behind their overflow pages, which
SQLite walks to reach them: 200 summaries of ~1 MB tasks cost ~65 ms of page reads without
``mmap_size`` (~4 ms with it). PostgreSQL keeps large values out of line (TOAST): no such cost.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from graph_runtime.models import NodeRun, NodeStatus, RunError, Task, TaskRequest, TaskStatus
from storage import convert, task_rows
from storage.repository_base import RepositoryBase
from storage.tables import node_run as run_t
from storage.tables import task as task_t

INCLUDABLE = ("data", "result", "nodes")
"""What a history page can carry beyond summaries: the request echo, the result, the node runs."""

# A node run's view without its id and error (status, timestamps, timings, attempts) is ~170 bytes
# of JSON; its id and error are measured.
NODE_VIEW_BYTES = 180
# Sizes are measured a few tasks at a time, so a cut reads the sizes of at most this many tasks too many.
SIZE_CHUNK = 8

_SUMMARY = (task_t.c.id, task_t.c.flow_id, task_t.c.revision, task_t.c.status, task_t.c.created, task_t.c.started,
            task_t.c.finished, task_t.c.execution_time, task_t.c.execution_cost, task_t.c.error, task_t.c.mode,
            task_t.c.parent_id)
_LARGE = {"data": task_t.c.data, "result": task_t.c.result}
_IDS: sa.BindParameter[list[int]] = sa.bindparam("ids", expanding=True)
_STATUS_COUNTS = (
    sa.select(run_t.c.task_id, run_t.c.status, sa.func.count().label("runs"),
              # A cached node's saved_cost, and a map's (its cached items'): no other run has one.
              sa.func.sum(sa.func.coalesce(run_t.c.saved_cost, 0.0)).label("saved"))
    .where(run_t.c.task_id.in_(_IDS), task_rows.NOT_ITEM_RUN)
    .group_by(run_t.c.task_id, run_t.c.status)
)
# Node runs as a history page shows them: everything but the output (never shown, often large).
_RUNS_WITHOUT_OUTPUT = (
    sa.select(*(c for c in run_t.c if c.name != "output"), sa.null().label("output"))
    .where(run_t.c.task_id.in_(_IDS), task_rows.NOT_ITEM_RUN)
)


@dataclass(frozen=True)
class TaskSummary:
    """A task as history lists it.

    Attributes:
        node_counts: how many of its node runs are in each status (every status, zeros included).
        saved_cost: what its nodes served from the output cache saved (SPEC §9).
        mode: ``prod`` or ``dev``, the mode it ran in.
        request: its request (Scade's ``data``), only when ``data`` was included.
        result: its result, only when ``result`` was included (else None).
        nodes: its node runs without their outputs, only when ``nodes`` was included.
    """

    id: int
    flow_id: str
    revision: int
    status: TaskStatus
    created: datetime
    started: datetime | None
    finished: datetime | None
    execution_time: float | None
    execution_cost: float | None
    error: RunError | None
    node_counts: Mapping[NodeStatus, int]
    mode: str = "prod"
    saved_cost: float = 0.0
    parent_id: int | None = None
    request: TaskRequest | None = None
    result: dict[str, Any] | None = None
    nodes: Mapping[str, NodeRun] | None = None


@dataclass(frozen=True)
class HistoryPage:
    """A page of history, newest first.

    Attributes:
        tasks: the summaries, with what ``include`` named.
        next_before: pass it as ``before`` for the next page; None on the last page.
        include: what the summaries carry beyond the summary (a subset of :data:`INCLUDABLE`).
    """

    tasks: list[TaskSummary]
    next_before: int | None
    include: frozenset[str]


class TaskHistoryMethods(RepositoryBase):
    """History pages (summaries, with what was asked for under a byte budget) and whole-task lists."""

    async def task_history(
        self,
        *,
        flow_id: str | None = None,
        status: TaskStatus | None = None,
        limit: int = 50,
        before: int | None = None,
        include: Collection[str] = (),
        mode: str | None = None,
        parent_id: int | None = None,
        budget_bytes: int,
    ) -> HistoryPage:
        """Tasks newest first (by id) as summaries, with ``include``'s parts under ``budget_bytes``.

        Args:
            flow_id: only this flow's tasks.
            status: only tasks in this status.
            limit: at most this many tasks.
            before: only tasks whose id is lower (the previous page's ``next_before``).
            include: any of :data:`INCLUDABLE`.
            mode: only tasks run in this mode (``prod`` or ``dev``).
            parent_id: only the child tasks of this task (its subflows and map items run as flows).
            budget_bytes: with ``include``, tasks are added while the JSON bytes of what they
                include fit in this (the first task always does); ``next_before`` continues.

        Raises:
            ValueError: ``include`` names something not in :data:`INCLUDABLE`.
        """
        wanted = frozenset(include)
        if unknown := wanted - set(INCLUDABLE):
            raise ValueError(f"cannot include {sorted(unknown)}; only {', '.join(INCLUDABLE)}")
        async with self._read() as conn:
            rows = list((await conn.execute(_summaries(flow_id, status, before, limit + 1, mode, parent_id))).all())
            more = len(rows) > limit
            rows = rows[:limit]
            counts, saved = await _status_counts(conn, [row.id for row in rows])
            if wanted:
                kept = await self._within_budget(conn, [row.id for row in rows], wanted, budget_bytes)
                more = more or len(kept) < len(rows)
                rows = await _with_large_columns(conn, rows[:len(kept)], wanted)
            nodes = await _runs_without_output(conn, [row.id for row in rows]) if "nodes" in wanted else {}
        tasks = [_summary(row, counts.get(row.id, {}), wanted, nodes.get(row.id, {}), saved.get(row.id, 0.0))
                 for row in rows]
        return HistoryPage(tasks, tasks[-1].id if more and tasks else None, wanted)

    async def _within_budget(self, conn: AsyncConnection, ids: Sequence[int], include: frozenset[str],
                             budget_bytes: int) -> list[int]:
        """The longest prefix of ``ids`` whose included bytes fit in the budget (never empty if ids is not)."""
        kept: list[int] = []
        total = 0
        for start in range(0, len(ids), SIZE_CHUNK):
            chunk = ids[start:start + SIZE_CHUNK]
            sizes = await self._sizes(conn, chunk, include)
            for task_id in chunk:
                total += sizes.get(task_id, 0)
                if kept and total > budget_bytes:
                    return kept
                kept.append(task_id)
        return kept

    async def _sizes(self, conn: AsyncConnection, ids: Sequence[int], include: frozenset[str]) -> dict[int, int]:
        """Each task's included bytes, measured in the database (nothing large is sent here)."""
        sizes = dict.fromkeys(ids, 0)
        columns = [self._json_bytes(column) for name, column in _LARGE.items() if name in include]
        if columns:
            size = columns[0] if len(columns) == 1 else columns[0] + columns[1]
            query = sa.select(task_t.c.id, size.label("size")).where(task_t.c.id.in_(ids))
            sizes.update({row.id: row.size for row in await conn.execute(query)})
        if "nodes" in include:
            per_node = NODE_VIEW_BYTES + sa.func.length(run_t.c.node_id) + self._json_bytes(run_t.c.error)
            query = (sa.select(run_t.c.task_id, sa.func.sum(per_node).label("size"))
                     .where(run_t.c.task_id.in_(ids), task_rows.NOT_ITEM_RUN).group_by(run_t.c.task_id))
            for row in await conn.execute(query):
                sizes[row.task_id] += row.size
        return sizes

    def _json_bytes(self, column: sa.ColumnElement[Any]) -> sa.ColumnElement[int]:
        """The byte length of a JSON column's text (0 for NULL), computed by the database."""
        if self._dialect == "postgresql":
            measured = sa.func.octet_length(sa.cast(column, sa.Text))
        else:  # SQLite stores JSON as UTF-8 text; as a blob its length is in bytes
            measured = sa.func.length(sa.cast(column, sa.LargeBinary))
        return sa.func.coalesce(measured, 0)

    async def list_tasks(
        self,
        *,
        flow_id: str | None = None,
        status: TaskStatus | None = None,
        limit: int = 50,
        before: int | None = None,
        mode: str | None = None,
        parent_id: int | None = None,
    ) -> list[Task]:
        """Whole tasks newest first (by id), node outputs included: for in-process callers and tests.

        Everything of every task is read: :meth:`task_history` is what a client's page uses.
        """
        query = sa.select(task_t).order_by(task_t.c.id.desc()).limit(limit)
        query = _filtered(query, flow_id, status, before, mode, parent_id)
        async with self._read() as conn:
            rows = (await conn.execute(query)).all()
            nodes = await task_rows.node_runs(conn, [row.id for row in rows])
        return [convert.task(row, nodes.get(row.id, {})) for row in rows]


def _filtered(query: sa.Select[Any], flow_id: str | None, status: TaskStatus | None, before: int | None,
              mode: str | None = None, parent_id: int | None = None) -> sa.Select[Any]:
    if parent_id is not None:
        query = query.where(task_t.c.parent_id == parent_id)
    if mode is not None:
        query = query.where(task_t.c.mode == mode)
    if flow_id is not None:
        query = query.where(task_t.c.flow_id == flow_id)
    if status is not None:
        query = query.where(task_t.c.status == TaskStatus(status).value)
    if before is not None:
        query = query.where(task_t.c.id < before)
    return query


def _summaries(flow_id: str | None, status: TaskStatus | None, before: int | None, limit: int,
               mode: str | None = None, parent_id: int | None = None) -> sa.Select[Any]:
    query = sa.select(*_SUMMARY).order_by(task_t.c.id.desc()).limit(limit)
    return _filtered(query, flow_id, status, before, mode, parent_id)


async def _status_counts(conn: AsyncConnection, ids: list[int]) -> tuple[dict[int, dict[NodeStatus, int]],
                                                                          dict[int, float]]:
    """Node runs per status of each task, and what its cached nodes saved."""
    counts: dict[int, dict[NodeStatus, int]] = {}
    saved: dict[int, float] = {}
    if ids:
        for row in await conn.execute(_STATUS_COUNTS, {"ids": ids}):
            counts.setdefault(row.task_id, {})[NodeStatus(row.status)] = row.runs
            saved[row.task_id] = saved.get(row.task_id, 0.0) + float(row.saved or 0.0)
    return counts, {task_id: round(total, 9) for task_id, total in saved.items()}


async def _with_large_columns(conn: AsyncConnection, rows: list[sa.Row[Any]],
                              include: frozenset[str]) -> list[sa.Row[Any]]:
    """The kept rows read again with the included large columns (and the summary columns as of
    this read, so a task's status and result agree)."""
    large = [column for name, column in _LARGE.items() if name in include]
    if not large or not rows:
        return rows
    ids = [row.id for row in rows]
    query = sa.select(*_SUMMARY, *large).where(task_t.c.id.in_(ids))
    again: dict[int, Any] = {row.id: row for row in await conn.execute(query)}
    return [again[task_id] for task_id in ids if task_id in again]


async def _runs_without_output(conn: AsyncConnection, ids: list[int]) -> dict[int, dict[str, NodeRun]]:
    if not ids:
        return {}
    return convert.node_runs_by_task(await conn.execute(_RUNS_WITHOUT_OUTPUT, {"ids": ids}))


def _summary(row: sa.Row[Any], counts: Mapping[NodeStatus, int], include: frozenset[str],
             nodes: dict[str, NodeRun], saved_cost: float = 0.0) -> TaskSummary:
    return TaskSummary(
        id=row.id,
        flow_id=row.flow_id,
        revision=row.revision,
        status=TaskStatus(row.status),
        created=row.created,
        started=row.started,
        finished=row.finished,
        execution_time=row.execution_time,
        execution_cost=row.execution_cost,
        error=RunError.from_dict(row.error),
        node_counts={status: counts.get(status, 0) for status in NodeStatus},
        mode=row.mode,
        saved_cost=saved_cost,
        parent_id=row.parent_id,
        request=TaskRequest.from_data(row.data) if "data" in include else None,
        result=row.result if "result" in include else None,
        nodes=nodes if "nodes" in include else None,
    )
