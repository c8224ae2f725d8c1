"""503 and 429 are retried, honouring Retry-After, a bounded number of times.

Our server answers 503 only while it shuts down or its store is down, and never 429 yet, so these
tests use a second tiny real server that answers what the test scripts (allowed for this test only).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from graph_runtime_client import AsyncClient, RateLimited, ServerError, TaskStatus, Unavailable

TASK = {"id": 7, "status": 3, "status_name": "succeeded", "flow_id": "f", "result": {"ok": True}, "nodes": {}}
BUSY = {"error": {"code": "shutting_down", "message": "the server is shutting down", "field": None}}


class Scripted:
    """Answers each request with the next (status, headers) of its script, then 200; records what came."""

    def __init__(self, *script: tuple[int, dict[str, str]]) -> None:
        self.script = list(script)
        self.seen: list[tuple[float, bytes, str | None]] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.seen.append((time.monotonic(), await request.read(), request.headers.get("Authorization")))
        if self.script:
            status, headers = self.script.pop(0)
            return web.json_response(BUSY, status=status, headers=headers)
        if request.path == "/api/v1/files":
            return web.json_response({"file": {"$file": "f1", "name": request.query["name"], "size": 3}}, status=201)
        return web.json_response(TASK)


Start = Callable[[Scripted], Any]


@pytest.fixture
def start(aiohttp_server: Any) -> Start:
    async def serve(scripted: Scripted) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", scripted.handle)
        server = await aiohttp_server(app)
        return str(server.make_url("")).rstrip("/")

    return serve


async def test_a_503_is_retried_after_its_retry_after(start: Start) -> None:
    scripted = Scripted((503, {"Retry-After": "1"}))
    async with AsyncClient(await start(scripted), "token") as gr:
        task = await gr.task(7)
    assert task.status is TaskStatus.SUCCEEDED
    (first, _, auth), (second, _, _) = scripted.seen
    assert 0.9 <= second - first < 3 and auth == "Basic token"


async def test_429s_are_retried_and_a_body_is_sent_again_whole(start: Start, tmp_path: Path) -> None:
    scripted = Scripted((429, {"Retry-After": "0"}), (429, {}))
    path = tmp_path / "a.txt"
    path.write_bytes(b"abc")
    async with AsyncClient(await start(scripted), "token") as gr:
        file = await gr.upload(path)
    assert file.id == "f1" and file.name == "a.txt"
    assert [body for _, body, _ in scripted.seen] == [b"abc"] * 3  # a fresh handle per try


async def test_retries_are_bounded_in_number_and_in_wait(start: Start) -> None:
    scripted = Scripted(*[(503, {"Retry-After": "3600"})] * 10)
    async with AsyncClient(await start(scripted), "token", retries=2, max_retry_wait=0.2) as gr:
        started = time.monotonic()
        with pytest.raises(Unavailable) as raised:
            await gr.task(7)
    assert len(scripted.seen) == 3 and time.monotonic() - started < 2  # 3600 s capped at 0.2
    assert (raised.value.status, raised.value.code) == (503, "shutting_down")

    limited = Scripted(*[(429, {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})] * 10)  # a date in the past: now
    async with AsyncClient(await start(limited), "token", retries=1) as gr:
        with pytest.raises(RateLimited):
            await gr.task(7)
    assert len(limited.seen) == 2


async def test_other_errors_are_not_retried(start: Start) -> None:
    scripted = Scripted((500, {}), (500, {}))
    async with AsyncClient(await start(scripted), "token") as gr:
        with pytest.raises(ServerError) as raised:
            await gr.task(7)
    assert raised.value.status == 500 and len(scripted.seen) == 1
