"""The schedule and flow-end trigger loops of a ``serve`` process, started and stopped with its services."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from graph_runtime.models import Task
from http_api.flow_triggers import FlowEndTriggers
from http_api.schedule import ScheduleTriggers
from http_api.services import Services
from http_api.triggers import Loop, TriggerCatalog, now_utc

ROUND_S = 1.0
"""A schedule fires within a second of its slot; a flow's end is seen within a second without a wake-up."""


class TriggerLoops:
    """One catalog of the flows' triggers, read by both loops."""

    def __init__(self, services: Services, *, round_s: float = ROUND_S) -> None:
        self._services = services
        self._unwatch: Callable[[], None] | None = None
        self.catalog = TriggerCatalog(services)
        self.schedule = ScheduleTriggers(services, self.catalog, now_utc)
        self._schedule_loop = Loop("schedule triggers", self.schedule.round, round_s)
        self._flow_end_loop = Loop("flow-end triggers", self._flow_end_round, round_s)
        self.flow_end = FlowEndTriggers(services, self.catalog, now_utc, wake=self._flow_end_loop.wake)

    async def _flow_end_round(self) -> object:
        return await self.flow_end.round()

    def start(self) -> None:
        self._schedule_loop.start()
        self._flow_end_loop.start()
        # A task this process ran ended: sweep now (tasks other processes run are seen within ROUND_S).
        self._unwatch = self._services.events.watch_stops(self._stopped)

    def _stopped(self, task: Task) -> None:
        # Only the end of a watched flow's task: a round costs reads, and most ends start nothing.
        if task.status.ended and self.catalog.watches(task.flow_id):
            self._flow_end_loop.wake()

    async def stop(self) -> None:
        if self._unwatch is not None:
            self._unwatch()
            self._unwatch = None
        await self._schedule_loop.stop()
        await self._flow_end_loop.stop()


TRIGGER_LOOPS = web.AppKey("trigger_loops", TriggerLoops)
