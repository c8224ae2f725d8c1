"""Triggers (SPEC §11): the triggers every flow declares, how a trigger starts a task, and ``GET /api/v1/triggers``.

Three kinds start tasks besides execute: a webhook (``routes_hooks``), a schedule
(``schedule``) and another flow's end (``flow_triggers``). Each task a trigger starts records it
(``TaskTrigger``: the task JSON's ``trigger``) and, for schedules and flow ends, carries an
idempotency key derived from what started it, so that every process of a deployment may run the
loops: the store keeps one task per (flow, key), whoever asks first.

The loops run in every ``serve`` process (with or without its worker, each of ``--processes N``),
not in ``graph-runtime worker`` processes: those stay at one query a second while idle (SPEC §10),
and a deployment always has an API process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from graph_runtime import cron, selection
from graph_runtime import errors as flow_errors
from graph_runtime.flow import Flow, FlowEndTrigger, ScheduleTrigger, Trigger, WebhookTrigger
from graph_runtime.models import Task, TaskTrigger
from http_api.body import SERVICES, json_response
from http_api.schemas import ExecuteBody
from http_api.services import Services, submit
from http_api.views import timestamp_text
from storage import trigger_queries

log = logging.getLogger(__name__)
routes = web.RouteTableDef()

UPCOMING = 3
"""How many next slots ``GET /api/v1/triggers`` shows per schedule."""


@dataclass(frozen=True)
class Declared:
    """One trigger of a flow's latest revision."""

    flow: Flow
    revision: int
    stored: datetime  # when that revision was stored: a trigger acts only on what happens after it
    index: int
    trigger: Trigger


class TriggerCatalog:
    """The triggers of every flow's latest revision, read again when a flow changes.

    A refresh is one light query (flow ids and latest revision numbers); the definitions are read
    only when that changed. ``current()`` refreshes at most every ``refresh_s``.
    """

    def __init__(self, services: Services, refresh_s: float = 5.0) -> None:
        self._services = services
        self._refresh_s = refresh_s
        self._revisions: dict[str, int] | None = None
        self._declared: list[Declared] = []
        self._refreshed = -math.inf

    async def refresh(self) -> list[Declared]:
        """Read the flows' latest revisions now; the triggers they declare."""
        revisions = await trigger_queries.latest_revisions(self._services.repo)
        if revisions != self._revisions:
            self._declared = [Declared(flow, revision, stored, index, trigger)
                              for flow, revision, stored in await self._services.repo.list_flows()
                              for index, trigger in enumerate(flow.triggers or ())]
            self._revisions = revisions
        self._refreshed = time.monotonic()
        return self._declared

    @property
    def refreshed(self) -> bool:
        """Whether the flows were read at least once."""
        return self._revisions is not None

    def watches(self, flow_id: str) -> bool:
        """Whether a flow trigger (as last read) watches ``flow_id``'s tasks."""
        return any(entry.trigger.type == "flow" and getattr(entry.trigger, "flow_id", None) == flow_id
                   for entry in self._declared)

    def expire(self) -> None:
        """Read the flows again at the next ``current()`` (a flow was just stored)."""
        self._refreshed = -math.inf

    async def current(self) -> list[Declared]:
        """The triggers, refreshed first when the last refresh is older than ``refresh_s``."""
        if time.monotonic() - self._refreshed >= self._refresh_s:
            return await self.refresh()
        return self._declared


async def start_triggered(services: Services, declared: Declared, trigger: TaskTrigger, *, key: str,
                          node_settings: dict[str, Any], mode: str = "prod") -> tuple[Task, bool] | None:
    """Start a task of ``declared``'s flow revision for ``trigger``, once per ``key``.

    Returns the task and whether it is new, or None when another process started this key's task
    from another revision of the flow (the key was taken: it ran once, which is what counts).
    """
    body = ExecuteBody(node_settings=node_settings, mode="dev" if mode == "dev" else None)
    try:
        return await submit(services, declared.flow.id, body, revision=declared.revision, idempotency_key=key,
                            raw_body={"trigger": trigger.as_dict()}, trigger=trigger)
    except flow_errors.IdempotencyConflict:
        return None


def start_node(flow: Flow) -> str:
    """The start node a request naming none gets (a trigger's data goes there)."""
    return selection.resolve_ids(flow, None, None, None)[0]


class Loop:
    """Runs ``step`` now and then every ``interval_s`` (sooner when woken) until stopped; a failed
    step is logged as a warning and the loop goes on (a database restart must not end it)."""

    def __init__(self, name: str, step: Callable[[], Awaitable[object]], interval_s: float) -> None:
        self.name = name
        self._step = step
        self._interval_s = interval_s
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.name)

    def wake(self) -> None:
        self._wake.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            self._wake.clear()  # before the round: a wake-up during it asks for another
            try:
                await self._step()
            except Exception as exc:  # the loop outlives a failed round (a database restart): the next retries
                log.warning("%s: %s", self.name, exc, extra={"action": "trigger_loop_failed"})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._interval_s)


def now_utc() -> datetime:
    return datetime.now(UTC)


@routes.get("/api/v1/triggers")
async def list_triggers(request: web.Request) -> web.Response:
    """Every trigger of every flow's latest revision: ``{"triggers": [...]}``; webhook keys never shown."""
    services: Services = request.app[SERVICES]  # type: ignore[assignment]
    now = now_utc()
    listed = [trigger_view(flow, index, trigger, now)
              for flow, _revision, _ in await services.repo.list_flows()
              for index, trigger in enumerate(flow.triggers or ())]
    return json_response({"triggers": listed})


def trigger_view(flow: Flow, index: int, trigger: Trigger, now: datetime) -> dict[str, Any]:
    """A trigger as listed: every field present (null where it does not apply), never a webhook's key."""
    view: dict[str, Any] = {"flow_id": flow.id, "namespace": flow.namespace_name, "index": index,
                            "type": trigger.type, "path": None, "cron": None, "timezone": None, "next": None,
                            "next_slots": [], "watch": None}
    if isinstance(trigger, WebhookTrigger):
        view["path"] = f"/api/v1/hooks/{flow.id}/***"
    elif isinstance(trigger, ScheduleTrigger):
        slots = [timestamp_text(slot) for slot in cron.next_slots(trigger.cron, trigger.timezone, now, UPCOMING)]
        view.update(cron=trigger.cron, timezone=trigger.timezone, next=slots[0], next_slots=slots)
    elif isinstance(trigger, FlowEndTrigger):
        view["watch"] = {"flow_id": trigger.flow_id, "status": list(trigger.status)}
    return view
