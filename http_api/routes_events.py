"""``GET /api/v1/task/{task_id}/events``: the task's events as server-sent events (SPEC §11).

Each event is ``id: <seq>``, ``event: task|node|progress|log|token`` and one ``data:`` line of
JSON. The stream starts with the stored history (all of it, or what follows ``Last-Event-ID``),
goes on live, and closes after the final ``task`` event. A comment line every
:data:`KEEPALIVE_S` keeps proxies from closing an idle stream.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Sequence

from aiohttp import HttpVersion11, web

from graph_runtime import errors as flow_errors
from graph_runtime.events import EventData, EventKind, TaskEvent
from http_api import errors
from http_api.body import SERVICES, path_int
from http_api.services import Services
from http_api.views import FILE_MARK, event_view, task_view, with_file_links
from nodes import codec

routes = web.RouteTableDef()

KEEPALIVE_S = 15.0
RETRY_MS = 1000
MAX_BEHIND_BYTES = 1 << 20
"""A reader with this much unsent on its connection is let go; it resumes with ``Last-Event-ID``."""


def _last_event_id(request: web.Request) -> int:
    """Where to resume: the ``Last-Event-ID`` header (what EventSource sends on reconnect), or
    ``?last_event_id=`` for clients that cannot set headers; 0 is the whole history."""
    raw = request.headers.get("Last-Event-ID", request.query.get("last_event_id", "0")).strip() or "0"
    if not raw.isdigit() or len(raw) > 18:
        raise errors.RequestInvalid("Last-Event-ID must be the id of an event of this stream (a whole number "
                                    "from 0): send the last id you received to resume after it",
                                    field="Last-Event-ID")
    return int(raw)


def _frame(services: Services, event: TaskEvent) -> bytes:
    """The event as it goes on the wire: encoded once, whatever the number of subscribers."""
    encoded = _encodings(event)
    frame = encoded.get("sse")
    if frame is None:
        frame = encoded["sse"] = _encode(services, event.seq, event.kind, event.data)
    return frame


def _chunk(services: Services, event: TaskEvent) -> bytes:
    """The frame as one HTTP/1.1 chunk, for writing straight to the connection (also encoded once)."""
    encoded = _encodings(event)
    chunk = encoded.get("sse-chunk")
    if chunk is None:
        frame = _frame(services, event)
        chunk = encoded["sse-chunk"] = b"%x\r\n%s\r\n" % (len(frame), frame)
    return chunk


def _encodings(event: TaskEvent) -> dict[str, bytes]:
    if event.encoded is None:
        event.encoded = {}
    return event.encoded


def _encode(services: Services, event_id: int, kind: EventKind, data: EventData) -> bytes:
    view = event_view(kind, data)
    body = codec.dumps(view)
    if FILE_MARK in body and isinstance(view, dict):  # a result's files get their signed links, as a poll's do
        body = codec.dumps(with_file_links(view, services.links.url_for))
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (event_id, kind.value.encode(), body)


@routes.get("/api/v1/task/{task_id}/events")
async def task_events(request: web.Request) -> web.StreamResponse:
    """The task's events: history first, then live, until its final ``task`` event."""
    services: Services = request.app[SERVICES]  # type: ignore[assignment]
    task_id = path_int(request, "task_id", flow_errors.TaskNotFound)
    after = _last_event_id(request)
    # 404 before the stream starts. The status alone: a thousand streams opening on a task of a
    # thousand nodes must not read its node runs a thousand times (that took 75% of the server).
    status = await services.repo.task_status(task_id)
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                           "X-Accel-Buffering": "no"})
    direct = request.version >= HttpVersion11 and request.transport is not None
    if direct:
        response.enable_chunked_encoding()  # so that live events can be written as chunks of our own
    await response.prepare(request)
    # How long a client waits before it reconnects. Written first, it also sends the headers: from
    # here on the connection carries only chunks of the body.
    await response.write(b"retry: %d\n\n" % RETRY_MS)
    last, final = after, False
    transport = request.transport

    def write(events: Sequence[TaskEvent]) -> bool:
        """Live events, written straight to the connection as the hub delivers them: one socket
        write per subscriber per commit, no coroutine woken (a thousand streams share this loop)."""
        nonlocal last, final
        if transport is None or transport.is_closing() or transport.get_write_buffer_size() > MAX_BEHIND_BYTES:
            return False  # gone, or so far behind that it is let go: it resumes with Last-Event-ID
        transport.write(_chunk(services, events[0]) if len(events) == 1
                        else b"".join(_chunk(services, event) for event in events))
        last, final = events[-1].seq, events[-1].final
        return True

    # An ended task says nothing more: its stored history (what follows Last-Event-ID) is all.
    batches: AsyncGenerator[list[TaskEvent] | None, None] = (
        _as_async(await services.events.history(task_id, after)) if status.ended
        else services.events.subscribe_batches(task_id, after, idle_s=KEEPALIVE_S, write=write if direct else None))
    try:
        async with contextlib.aclosing(batches):  # the subscription ends with the stream, however it ends
            async for batch in batches:
                if batch is None:
                    await response.write(b": keep-alive\n\n")
                    continue
                # What came since this stream last wrote, in one write (a busy server sends fewer, larger ones).
                await response.write(b"".join(_frame(services, event) for event in batch))
                last, final = batch[-1].seq, batch[-1].final
                del batch  # not kept while the stream waits: a history can be large (see subscribe_batches)
    except ConnectionResetError:  # the client left (a closed tab, a reconnect): nothing is wrong here
        return response
    if transport is None or transport.is_closing():
        return response  # the client left while its events were being written
    if not final and last == 0 and after == 0:
        # The stream ended without any event: this server is stopping (the client reconnects
        # with Last-Event-ID), or the task ended before events existed (one closing event, so
        # clients still learn the outcome). Ended without the final event otherwise: stopping,
        # or a reader so far behind that it was let go; either way it resumes where it was.
        task = await services.repo.get_task(task_id)
        if task.status.ended:
            await response.write(_encode(services, 1, "task", task_view(task)))
    with contextlib.suppress(ConnectionResetError):
        await response.write_eof()
    return response


async def _as_async(events: list[TaskEvent]) -> AsyncGenerator[list[TaskEvent] | None, None]:
    if events:
        yield events


