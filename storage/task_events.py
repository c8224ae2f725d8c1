"""Task events on SQLite or PostgreSQL: :class:`graph_runtime.events.EventLog`.

Written in batches by each process's hub (one transaction per loop turn, beside the node-run
commits, never inside them), read by number: a task's events after a ``seq``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from graph_runtime.events import EventKind, TaskEvent
from storage.repository_base import RepositoryBase
from storage.tables import task_event as event_t


def _row(event: TaskEvent) -> dict[str, object]:
    return {"task_id": event.task_id, "seq": event.seq, "kind": event.kind.value, "data": dict(event.data),
            "at": event.at, "final": event.final}


# INSERT … SELECT … WHERE the writer's claim is still the task's: one statement, the same on SQLite
# and PostgreSQL (the WHERE also keeps SQLite from reading ON CONFLICT as a join clause).
_APPEND_FENCED = sa.text(
    "INSERT INTO task_event (task_id, seq, kind, data, at, final) "
    "SELECT :task_id, :seq, :kind, :data, :at, :final "
    "WHERE EXISTS (SELECT 1 FROM task WHERE task.id = :task_id AND task.claims = :epoch) "
    "ON CONFLICT (task_id, seq) DO NOTHING"
).bindparams(
    sa.bindparam("task_id", type_=event_t.c.task_id.type), sa.bindparam("seq", type_=event_t.c.seq.type),
    sa.bindparam("kind", type_=event_t.c.kind.type), sa.bindparam("data", type_=event_t.c.data.type),
    sa.bindparam("at", type_=event_t.c.at.type), sa.bindparam("final", type_=event_t.c.final.type),
    sa.bindparam("epoch", type_=sa.Integer()),
)
_LAST_SEQ = sa.select(sa.func.max(event_t.c.seq)).where(event_t.c.task_id == sa.bindparam("task_id"))
_SINCE_CHUNK = 500  # tasks per statement: an OR of (task, seq) ranges, each one index range


class TaskEventLog(RepositoryBase):
    """The stored events of every task (see :mod:`graph_runtime.events`)."""

    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__(engine)
        # A worker that lost its lease may still report a node: its events are fenced by its claim
        # (the task's claim count must still be its epoch), and a number already written is
        # never overwritten.
        self._append_fenced = _APPEND_FENCED
        self._append_free = self._insert(event_t).on_conflict_do_nothing(index_elements=[event_t.c.task_id,
                                                                                         event_t.c.seq])

    async def append(self, events: Sequence[TaskEvent]) -> None:
        if not events:
            return
        fenced = [_row(e) | {"epoch": e.epoch} for e in events if e.epoch is not None]
        free = [_row(e) for e in events if e.epoch is None]
        async with self._write() as conn:
            if fenced:
                await conn.execute(self._append_fenced, fenced)
            if free:
                await conn.execute(self._append_free, free)

    async def since(self, task_ids: Mapping[int, int]) -> list[TaskEvent]:
        found: list[TaskEvent] = []
        items = list(task_ids.items())
        for start in range(0, len(items), _SINCE_CHUNK):
            chunk = items[start:start + _SINCE_CHUNK]
            query = (
                sa.select(event_t)
                .where(sa.or_(*(sa.and_(event_t.c.task_id == task_id, event_t.c.seq > after)
                                for task_id, after in chunk)))
                .order_by(event_t.c.task_id, event_t.c.seq)
            )
            async with self._read() as conn:
                rows = (await conn.execute(query)).all()
            found.extend(TaskEvent(row.task_id, row.seq, EventKind(row.kind), row.data, row.at, row.final)
                         for row in rows)
        return found

    async def last_seq(self, task_id: int) -> int:
        async with self._read() as conn:
            return (await conn.execute(_LAST_SEQ, {"task_id": task_id})).scalar() or 0
