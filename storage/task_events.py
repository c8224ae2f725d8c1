"""Task events on SQLite or PostgreSQL, read back: :class:`graph_runtime.events.EventLog`.

They are written by the hot path, in the group commit's transaction with the node runs
(``WorkerStore.save_node_runs_many``), fenced by their writer's epoch; here they are read by
number: a task's events after a ``seq``.
"""

from __future__ import annotations

from collections.abc import Mapping

import sqlalchemy as sa

from graph_runtime.events import EventKind, TaskEvent
from storage.repository_base import RepositoryBase
from storage.tables import task_event as event_t

_LAST_SEQ = sa.select(sa.func.max(event_t.c.seq)).where(event_t.c.task_id == sa.bindparam("task_id"))
_SINCE_CHUNK = 500  # tasks per statement: an OR of (task, seq) ranges, each one index range


class TaskEventLog(RepositoryBase):
    """The stored events of every task (see :mod:`graph_runtime.events`)."""

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
