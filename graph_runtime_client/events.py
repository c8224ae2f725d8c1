"""Following a task's event stream (``GET /api/v1/task/{id}/events``), reconnecting with
``Last-Event-ID`` until the final ``task`` event. Tested against a protocol-level SSE endpoint
and against the server's own stream (``tests/http_api/test_events.py``, the CLI's live table).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from graph_runtime_client import errors
from graph_runtime_client.models import Event, TaskStatus
from graph_runtime_client.sse import EventStreamParser, RawEvent
from graph_runtime_client.transport import Transport

DEFAULT_RECONNECT_S = 1.0
BROKEN = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError)


async def follow(transport: Transport, task_id: int, *, last_event_id: str | None = None,
                 max_failures: int = 10) -> AsyncIterator[Event]:
    """Every event of the task from after ``last_event_id`` (the whole history if None), then stop
    after the final ``task`` event. A dropped connection is reopened after the server's ``retry:``
    delay (else 1 s) with ``Last-Event-ID``; more than ``max_failures`` drops in a row without an
    event in between raise :class:`errors.StreamError`. API errors (404 …) raise at once."""
    failures, delay = 0, DEFAULT_RECONNECT_S
    path = f"/api/v1/task/{task_id}/events"
    while True:
        parser = EventStreamParser(last_event_id)
        try:
            async for raw in _one_connection(transport, path, parser):
                failures = 0
                event = Event(id=raw.id, event=raw.event, data=_data(raw.data))
                yield event
                if event.event == "task" and _is_final(event.data):
                    return
        except BROKEN:
            pass  # reconnect below, from the last id seen
        last_event_id = parser.last_event_id
        if parser.retry_ms is not None:
            delay = parser.retry_ms / 1000
        failures += 1
        if failures > max_failures:
            raise errors.StreamError(f"the event stream of task {task_id} broke {failures} times in a row")
        await asyncio.sleep(delay)


async def _one_connection(transport: Transport, path: str, parser: EventStreamParser) -> AsyncIterator[RawEvent]:
    headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
    if parser.last_event_id is not None:
        headers["Last-Event-ID"] = parser.last_event_id
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=transport.timeout)
    response = await transport.open("GET", path, headers=headers, timeout=timeout)
    async with response:
        if response.content_type != "text/event-stream":
            raise errors.StreamError(f"{path} answered {response.content_type!r}, not text/event-stream")
        async for chunk in response.content.iter_any():
            for raw in parser.feed(chunk):
                yield raw


def _data(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _is_final(data: Any) -> bool:
    """A ``task`` event whose task has ended (status 3, 4 or 5)."""
    if not isinstance(data, dict):
        return False
    try:
        return TaskStatus.from_json(data).ended
    except (KeyError, ValueError, IndexError, TypeError):
        return False
