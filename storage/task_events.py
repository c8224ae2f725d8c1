"""Task events on SQLite or PostgreSQL, read back: :class:`graph_runtime.events.EventLog`.

They are written by the hot path, in the group commit's transaction with the node runs
(``WorkerStore.save_node_runs_many``) or a task's end, fenced by their writer's epoch; here they
are read by number, also on the hot path (a process's poll reads them for every stream it feeds
from another process's tasks, twenty times a second): a task's events after a ``seq``.
"""

from __future__ import annotations

from collections.abc import Mapping

from graph_runtime.events import TaskEvent
from storage import event_data
from storage.repository_base import RepositoryBase


class TaskEventLog(RepositoryBase):
    """The stored events of every task (see :mod:`graph_runtime.events`)."""

    async def since(self, task_ids: Mapping[int, int]) -> list[TaskEvent]:
        return await self._hot.events_since(task_ids) if task_ids else []

    async def last_seq(self, task_id: int) -> int:
        return await self._hot.last_event_seq(task_id)

    # How the data is stored, given to the hub that makes it (storage.event_data).
    node_data = staticmethod(event_data.node_data)
    task_data = staticmethod(event_data.task_data)
