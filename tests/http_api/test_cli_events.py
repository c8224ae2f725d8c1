"""The CLI's live table on a server follows the task's event stream (issue 12 item 6): ``tasks
watch`` and ``run --remote`` read the task once, then only its events (no 4×/s poll), print the
nodes' log lines, and fall back to polling when the server has no stream.

The CLI runs as a child process; between it and the test's server stands a small forwarding
proxy (a real HTTP server on loopback) that records each request and can refuse the stream."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.client.conftest import server_url
from tests.conftest import Api
from tests.processes import last_json_line, run_cli
from tests.support import FlowBuilder, eventually

pytestmark = pytest.mark.timeout(120)
HOP_BY_HOP = {"host", "content-length", "transfer-encoding", "connection", "accept-encoding"}


@dataclass
class Proxy:
    """Forwards every request to ``target`` as it streams; records them; may refuse the event stream."""

    target: str
    refuse_events: bool = False
    seen: list[tuple[str, str]] = field(default_factory=list)
    url: str = ""

    async def forward(self, request: web.Request) -> web.StreamResponse:
        self.seen.append((request.method, request.path))
        if self.refuse_events and request.path.endswith("/events"):  # a server without the stream
            return web.json_response({"error": {"code": "not_found", "message": "no such route"}}, status=404)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        async with aiohttp.ClientSession() as session, session.request(
                request.method, self.target + request.path_qs, headers=headers, data=await request.read()) as upstream:
            response = web.StreamResponse(status=upstream.status, headers={
                k: v for k, v in upstream.headers.items() if k in ("Content-Type", "Cache-Control", "Retry-After")})
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():  # an event goes on as soon as it comes
                await response.write(chunk)
            await response.write_eof()
            return response

    def reads_of(self, task_id: int) -> list[str]:
        return [path for method, path in self.seen if method == "GET" and path == f"/api/v1/task/{task_id}"]


@pytest.fixture
async def proxy(api: Api, aiohttp_server: Any) -> Proxy:
    state = Proxy(server_url(api))
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", state.forward)
    server = await aiohttp_server(app)
    state.url = str(server.make_url("")).rstrip("/")
    return state


async def _chatty(api: Api) -> None:
    # test.chatty: progress, one log line ("no key"), tokens, then it waits (here until the test
    # cancels it: a CLI process takes seconds to start on a busy machine, and must find it running).
    await api.put_flow(FlowBuilder("chatty").node("start", "start", data={})
                       .node("talk", "test.chatty", hold=600)
                       .node("end", "end").edge("start", "talk", input="data").edge("talk", "end").build())


def _cli(proxy: Proxy, api: Api, *args: str, cwd: Path) -> asyncio.Future[Any]:
    """The command in a child process, started now, while this loop serves the server and the proxy."""
    return asyncio.ensure_future(asyncio.to_thread(run_cli, "--url", proxy.url, "--key", api.token, *args, cwd=cwd))


async def _cancel_once(api: Api, proxy: Proxy, seen: Any) -> Any:
    """Cancel the (one) chatty task once the proxy has seen what ``seen(task_id)`` looks for."""
    task_id = await eventually(lambda: _running_id(api), timeout=60)
    await eventually(lambda: seen(task_id), timeout=60)
    await api.json("POST", f"/api/v1/task/{task_id}/cancel", 202)
    return task_id


async def _running_id(api: Api) -> int | None:
    page = await api.json("GET", "/api/v1/tasks", 200, params={"flow_id": "chatty", "status": "running"})
    return page["tasks"][0]["id"] if page["tasks"] else None


def _row(stderr: str, node_id: str, status: str) -> bool:
    return re.search(rf"^\W*{node_id}\W+{status}\b", stderr, re.MULTILINE) is not None


async def test_tasks_watch_follows_the_event_stream_not_a_poll(api: Api, proxy: Proxy, tmp_path: Path) -> None:
    await _chatty(api)
    task = await api.execute("chatty")
    watching = _cli(proxy, api, "tasks", "watch", str(task["id"]), cwd=tmp_path)
    await _cancel_once(api, proxy, lambda i: ("GET", f"/api/v1/task/{i}/events") in proxy.seen)
    watched = await watching

    assert watched.returncode == 1, watched.stderr  # it ended cancelled
    assert last_json_line(watched.stdout) == await api.task(task["id"])
    assert last_json_line(watched.stdout)["status_name"] == "cancelled"
    assert _row(watched.stderr, "start", "succeeded") and _row(watched.stderr, "talk", "cancelled"), watched.stderr
    assert "talk info: no key" in watched.stderr, "the node's log line, which only the stream carries"
    assert proxy.reads_of(task["id"]) == [f"/api/v1/task/{task['id']}"] * 2, "read at the start and at the end"


async def test_run_remote_follows_the_stream_too(api: Api, proxy: Proxy, tmp_path: Path) -> None:
    await _chatty(api)
    running = _cli(proxy, api, "run", "chatty", "--remote", cwd=tmp_path)
    task_id = await _cancel_once(api, proxy, lambda i: ("GET", f"/api/v1/task/{i}/events") in proxy.seen)
    ran = await running

    assert ran.returncode == 1, ran.stderr
    assert last_json_line(ran.stdout)["id"] == task_id and last_json_line(ran.stdout)["status_name"] == "cancelled"
    assert "talk info: no key" in ran.stderr and _row(ran.stderr, "talk", "cancelled"), ran.stderr
    assert len(proxy.reads_of(task_id)) == 2


async def test_without_a_stream_the_table_polls(api: Api, proxy: Proxy, tmp_path: Path) -> None:
    proxy.refuse_events = True
    await _chatty(api)
    task = await api.execute("chatty")
    watching = _cli(proxy, api, "tasks", "watch", str(task["id"]), cwd=tmp_path)
    await _cancel_once(api, proxy, lambda i: len(proxy.reads_of(i)) >= 3)  # the first read, then polls
    watched = await watching

    assert watched.returncode == 1, watched.stderr
    assert last_json_line(watched.stdout)["status_name"] == "cancelled"
    assert "(the event stream failed: 404 not_found" in watched.stderr and "Traceback" not in watched.stderr
    assert _row(watched.stderr, "talk", "cancelled"), watched.stderr
    assert "no key" not in watched.stderr, "log lines come only with the stream"
