"""Schedule triggers (SPEC §11): ``{type: schedule, cron, timezone, node_settings}`` starts a task per slot.

Once per slot across processes: the task's idempotency key is ``trigger:schedule:<index>:<slot>``
(the slot in UTC), and the store keeps one task per (flow, key), so every process may fire
every slot and only the first creates it.

A missed slot runs once, not a pile: a round looks only at the latest slot at or before "now".
After downtime that is the last slot missed (the earlier ones are skipped); if it already has its
task, nothing happens. A slot earlier than the flow revision that declares the trigger is never
run, so storing a flow (or a new revision of it) does not fire the slot that just passed.

"Now" is given to :meth:`ScheduleTriggers.tick`, so tests choose it; the loop passes the clock.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from graph_runtime import cron
from graph_runtime.flow import ScheduleTrigger
from graph_runtime.models import Task, TaskTrigger
from http_api.services import Services
from http_api.triggers import Declared, TriggerCatalog, start_triggered
from http_api.views import timestamp_text
from nodes.errors import GraphRuntimeError

log = logging.getLogger(__name__)

KEY_PREFIX = "trigger:schedule:"


def slot_key(index: int, slot: datetime) -> str:
    """The idempotency key of a schedule trigger's task for ``slot``."""
    return f"{KEY_PREFIX}{index}:{timestamp_text(slot)}"


class ScheduleTriggers:
    """Fires every schedule trigger's latest due slot; remembers per trigger when the next one is due."""

    def __init__(self, services: Services, catalog: TriggerCatalog, clock: Callable[[], datetime]) -> None:
        self._services = services
        self._catalog = catalog
        self.clock = clock  # the loop's "now"; a test may move it
        # (flow, revision, index) -> the next slot: until then a round has nothing to do for it.
        self._due: dict[tuple[str, int, int], datetime] = {}

    async def round(self) -> list[Task]:
        """One round of the loop: :meth:`tick` at the clock's now."""
        return await self.tick(self.clock(), await self._catalog.current())

    async def tick(self, now: datetime, declared: list[Declared]) -> list[Task]:
        """Start the task of each schedule trigger's latest slot at or before ``now`` that has none yet.

        Returns the tasks this call created (a slot another process fired first is not among them).
        """
        started = []
        schedules = [(entry, entry.trigger) for entry in declared if isinstance(entry.trigger, ScheduleTrigger)]
        # Forget the triggers of revisions no longer the latest (or of deleted flows).
        current = {(entry.flow.id, entry.revision, entry.index) for entry, _ in schedules}
        self._due = {where: due for where, due in self._due.items() if where in current}
        for entry, trigger in schedules:
            if not self._services.accepting:
                break
            where = (entry.flow.id, entry.revision, entry.index)
            due = self._due.get(where)
            if due is not None and now < due:
                continue
            slot = cron.latest_slot(trigger.cron, trigger.timezone, now)
            if slot >= entry.stored:
                task = await self._fire(entry, trigger, slot)
                if task is not None:
                    started.append(task)
            self._due[where] = cron.next_slots(trigger.cron, trigger.timezone, now)[0]
        return started

    async def _fire(self, entry: Declared, trigger: ScheduleTrigger, slot: datetime) -> Task | None:
        ref = TaskTrigger("schedule", entry.index, slot=timestamp_text(slot))
        try:
            outcome = await start_triggered(self._services, entry, ref, key=slot_key(entry.index, slot),
                                            node_settings=dict(trigger.node_settings))
        except GraphRuntimeError as exc:  # the flow cannot run as declared: say so once per slot, go on
            log.warning("schedule trigger %d of flow %r could not start its task for %s: %s", entry.index,
                        entry.flow.id, ref.slot, exc.message,
                        extra={"action": "trigger_refused", "flow_id": entry.flow.id, "code": exc.code})
            return None
        if outcome is None or not outcome[1]:
            return None
        task = outcome[0]
        log.info("task started by a schedule", extra={"action": "schedule_fired", "task_id": task.id,
                                                      "flow_id": entry.flow.id, "slot": ref.slot})
        return task
