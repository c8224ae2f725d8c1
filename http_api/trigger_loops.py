"""The schedule and flow-end trigger loops of a ``serve`` process, started and stopped with its services."""

from __future__ import annotations

from aiohttp import web

from http_api.flow_triggers import FlowEndTriggers
from http_api.schedule import ScheduleTriggers
from http_api.services import Services
from http_api.triggers import Loop, TriggerCatalog, now_utc

ROUND_S = 1.0
"""A schedule fires within a second of its slot; a flow's end is seen within a second without a wake-up."""


class TriggerLoops:
    """One catalog of the flows' triggers, read by both loops."""

    def __init__(self, services: Services, *, round_s: float = ROUND_S) -> None:
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

    async def stop(self) -> None:
        await self._schedule_loop.stop()
        await self._flow_end_loop.stop()


TRIGGER_LOOPS = web.AppKey("trigger_loops", TriggerLoops)
