"""Flow-end triggers (SPEC §11): ``{type: flow, flow_id, status}`` starts a task when a task of
``flow_id`` ends with one of ``status``, with the ended task's JSON as its start node's ``data``.

Exactly once per source task, across processes and restarts, from the database alone: the
started task's idempotency key is ``trigger:flow:<source task id>``, and a sweep (every second,
in every ``serve`` process) asks for the watched flow's ended tasks that no task of the watching
flow names yet. Each process keeps, per watched flow, the id below which every task has ended
(and was created more than ``SETTLE`` ago), so a sweep reads only the recent end of the flow's
history; a process starting anew derives it again with one scan. :meth:`FlowEndTriggers.task_ended`
wakes the sweep at once (for the task-events hub); without it a task's end is seen within a
second.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from graph_runtime.flow import FlowEndTrigger
from graph_runtime.models import Task, TaskTrigger
from http_api.services import Services
from http_api.triggers import Declared, TriggerCatalog, start_node, start_triggered
from http_api.views import task_view
from nodes import codec
from nodes.errors import GraphRuntimeError
from storage import trigger_queries

log = logging.getLogger(__name__)

SETTLE = timedelta(seconds=60)
"""How long after its creation a task's id may still be unseen: concurrent inserts commit out of id order."""
PAGE = 100


def source_key(task_id: int) -> str:
    """The idempotency key of the task a flow-end trigger starts for source task ``task_id``."""
    return f"{trigger_queries.FLOW_KEY_PREFIX}{task_id}"


class FlowEndTriggers:
    """Starts the tasks flow-end triggers owe; any number of processes may sweep at once."""

    def __init__(self, services: Services, catalog: TriggerCatalog, clock: Callable[[], datetime],
                 wake: Callable[[], None] = lambda: None) -> None:
        self._services = services
        self._catalog = catalog
        self._clock = clock
        self._wake = wake
        self._from: dict[str, int] = {}  # watched flow -> the id from which its tasks may still end
        self._refused: set[tuple[str, int, int]] = set()  # (watching flow, revision, source): warned once

    async def task_ended(self, task_id: int) -> None:
        """A task ended (in this process or another): sweep now rather than within the second."""
        self._wake()

    async def round(self) -> list[Task]:
        """One round of the loop: :meth:`sweep` at the clock's now."""
        return await self.sweep(self._clock(), await self._catalog.current())

    async def sweep(self, now: datetime, declared: list[Declared]) -> list[Task]:
        """Start every task owed for ended tasks of the watched flows; returns those this call created."""
        watching: dict[str, list[Declared]] = {}
        for entry in declared:
            if isinstance(entry.trigger, FlowEndTrigger):
                watching.setdefault(entry.trigger.flow_id, []).append(entry)
        started: list[Task] = []
        for watched, entries in watching.items():
            if self._services.accepting:
                started += await self._sweep_flow(watched, entries, now)
        return started

    async def _sweep_flow(self, watched: str, entries: list[Declared], now: datetime) -> list[Task]:
        repo = self._services.repo
        from_id = self._from.get(watched, 0)
        # Read before the candidates: a task that ends in between is still found by the next sweep.
        next_from = await trigger_queries.settled_below(repo, watched=watched, from_id=from_id,
                                                        created_before=now - SETTLE)
        started = []
        for entry in entries:
            assert isinstance(entry.trigger, FlowEndTrigger)
            ids = await trigger_queries.unstarted_sources(
                repo, watched=watched, statuses=entry.trigger.status, from_id=from_id,
                finished_since=entry.stored, watcher=entry.flow.id, limit=PAGE)
            if len(ids) == PAGE:  # more beyond this page: look from there again next time
                next_from = min(next_from, ids[-1] + 1)
            for source_id in ids:
                task = await self._start(entry, source_id)
                if task is not None:
                    started.append(task)
        self._from[watched] = next_from
        return started

    async def _start(self, entry: Declared, source_id: int) -> Task | None:
        if (entry.flow.id, entry.revision, source_id) in self._refused:
            return None
        source = await self._services.repo.get_task(source_id)
        ref = TaskTrigger("flow", entry.index, task_id=source_id)
        data: dict[str, Any] = codec.loads(codec.dumps(task_view(source)))  # the GET /task/{id} body, as JSON
        try:
            outcome = await start_triggered(self._services, entry, ref, key=source_key(source_id),
                                            node_settings={start_node(entry.flow): {"data": data}},
                                            mode=source.request.mode)
        except GraphRuntimeError as exc:  # the watching flow cannot run as declared: say so once, go on
            self._refused.add((entry.flow.id, entry.revision, source_id))
            log.warning("flow trigger %d of flow %r could not start its task for task %d: %s", entry.index,
                        entry.flow.id, source_id, exc.message,
                        extra={"action": "trigger_refused", "flow_id": entry.flow.id, "code": exc.code})
            return None
        if outcome is None or not outcome[1]:
            return None
        task = outcome[0]
        log.info("task started by another flow's end", extra={
            "action": "flow_trigger_fired", "task_id": task.id, "flow_id": entry.flow.id, "source_task_id": source_id})
        return task
