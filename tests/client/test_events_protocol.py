"""The client's half of the event stream: the text/event-stream parser and reconnection with
Last-Event-ID. Our server's stream is not built yet, so the endpoint here is a protocol-level SSE
server started by the test; it stands for no part of our API beyond the SSE wire format."""

from __future__ import annotations

import asyncio
import json
from typing import Any, ClassVar

import pytest
from aiohttp import web

from graph_runtime_client import AsyncClient, Client, NotFound, StreamError
from graph_runtime_client.sse import EventStreamParser, RawEvent

STREAM = (
    "\ufeff: a comment, then an event of two data lines\r\n"
    "id: 1\r\nevent: node\r\ndata: {\"node_id\": \"a\",\r\ndata:  \"status\": \"running\"}\r\n\r\n"
    "retry: 250\n"
    "event: ignored-without-data\n\n"
    "id: 2\rdata: plain text\r\r"
    "data:no space after the colon\n\n"
    "id\n"
    "data: after an empty id\n\n"
).encode()
EXPECTED = [
    RawEvent(id="1", event="node", data='{"node_id": "a",\n "status": "running"}'),
    RawEvent(id="2", event="message", data="plain text"),
    RawEvent(id="2", event="message", data="no space after the colon"),
    RawEvent(id="", event="message", data="after an empty id"),
]


def parse(chunks: list[bytes]) -> tuple[list[RawEvent], EventStreamParser]:
    parser = EventStreamParser()
    events = [event for chunk in chunks for event in parser.feed(chunk)]
    return events, parser


@pytest.mark.parametrize("size", [len(STREAM), 1, 2, 3, 7])
def test_the_parser_gives_the_same_events_however_the_bytes_are_cut(size: int) -> None:
    events, parser = parse([STREAM[i:i + size] for i in range(0, len(STREAM), size)])
    assert events == EXPECTED
    assert parser.retry_ms == 250 and parser.last_event_id == ""


def test_an_unfinished_event_is_not_dispatched_and_utf8_survives_cuts() -> None:
    body = "id: 9\ndata: caf\u00e9 \u2615\n\ndata: half".encode()
    events, _ = parse([bytes([b]) for b in body])
    assert events == [RawEvent(id="9", event="message", data="caf\u00e9 \u2615")]


def sse(event_id: int, event: str, data: dict[str, Any]) -> bytes:
    return f"id: {event_id}\nevent: {event}\ndata: {json.dumps(data)}\n\n".encode()


class Stream:
    """Events 1–4 (4 the final ``task``); the first connection breaks after event 2."""

    EVENTS: ClassVar[list[tuple[int, str, dict[str, Any]]]] = [(1, "task", {"id": 5, "status": 2, "status_name": "running"}),
              (2, "node", {"node_id": "a", "status": "succeeded"}),
              (3, "progress", {"node_id": "b", "fraction": 0.5}),
              (4, "task", {"id": 5, "status": 3, "status_name": "succeeded"})]

    def __init__(self, break_after: int | None = 2) -> None:
        self.break_after = break_after
        self.asked: list[str | None] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        last = request.headers.get("Last-Event-ID")
        self.asked.append(last)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"retry: 20\n\n")
        for event_id, event, data in self.EVENTS:
            if last is not None and event_id <= int(last):
                continue
            await response.write(sse(event_id, event, data))
            if event_id == self.break_after and len(self.asked) == 1:
                assert request.transport is not None
                request.transport.close()  # the connection drops mid-stream
                return response
        return response


@pytest.fixture
async def sse_url(aiohttp_server: Any) -> Any:
    async def serve(handler: Any) -> str:
        app = web.Application()
        app.router.add_get("/api/v1/task/{task_id}/events", handler)
        server = await aiohttp_server(app)
        return str(server.make_url("")).rstrip("/")

    return serve


async def test_events_reconnect_with_last_event_id_without_gap_or_duplicate(sse_url: Any) -> None:
    stream = Stream()
    async with AsyncClient(await sse_url(stream.handle), "token") as gr:
        events = [event async for event in gr.events(5)]
    assert [(e.id, e.event) for e in events] == [("1", "task"), ("2", "node"), ("3", "progress"), ("4", "task")]
    assert events[2].data == {"node_id": "b", "fraction": 0.5}
    assert stream.asked == [None, "2"]


async def test_events_resume_from_a_given_id_and_stop_at_the_final_task_event(sse_url: Any) -> None:
    stream = Stream(break_after=None)
    async with AsyncClient(await sse_url(stream.handle), "token") as gr:
        events = [event.id async for event in gr.events(5, last_event_id="3")]
    assert events == ["4"] and stream.asked == ["3"]


async def test_events_raise_api_errors_and_give_up_on_a_stream_that_never_ends(sse_url: Any) -> None:
    async def missing(request: web.Request) -> web.Response:
        body = {"error": {"code": "task_not_found", "message": "no task 5", "field": None}}
        return web.json_response(body, status=404)

    async with AsyncClient(await sse_url(missing), "token") as gr:
        with pytest.raises(NotFound):
            [event async for event in gr.events(5)]

    async def empty(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"retry: 1\n\n")
        return response

    async with AsyncClient(await sse_url(empty), "token") as gr:
        with pytest.raises(StreamError, match="broke"):
            [event async for event in gr.events(5)]

    async def not_a_stream(request: web.Request) -> web.Response:
        return web.json_response({})

    async with AsyncClient(await sse_url(not_a_stream), "token") as gr:
        with pytest.raises(StreamError, match="not text/event-stream"):
            [event async for event in gr.events(5)]


async def test_the_blocking_client_iterates_the_same_events(sse_url: Any) -> None:
    url = await sse_url(Stream().handle)

    def script() -> list[str | None]:
        with Client(url, "token") as client:
            return [event.id for event in client.events(5)]

    assert await asyncio.to_thread(script) == ["1", "2", "3", "4"]
