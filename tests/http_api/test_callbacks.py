"""Callbacks (SPEC §11): an ended task's JSON POSTed to ``callback_url`` and the flow's ``on_end``,
signed per Standard Webhooks (checked by the ``standardwebhooks`` package, as a receiver would),
retried from the durable outbox (across a restart of real server processes), SSRF-guarded, and
listed by ``GET /task/{id}/callbacks``; on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from aiohttp import web
from standardwebhooks import Webhook, WebhookVerificationError

from http_api import auth
from http_api.app import create_app
from http_api.body import SERVICES
from http_api.callbacks import CallbackDispatcher
from http_api.settings import Settings
from storage import convert
from storage.callbacks import GIVEN_UP, CallbackStore, callback_delivery
from tests import pg
from tests.conftest import SAMPLE_FLOWS, Api
from tests.processes import SAMPLE_FLOWS as PROCESS_FLOWS
from tests.processes import ServerProcess, free_port, run_cli, sqlite_url, wait_until
from tests.reliability.cluster import pg_database
from tests.support import FlowBuilder, eventually, registry_with_test_types

FAST = (0.05, 0.1, 0.2)  # retry waits for tests that retry in process (the real schedule: 5 s, 30 s, …)
GREETING = {"node_settings": {"start": {"data": {"mood": "sad"}}}}


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes

    def verified(self, secret: str) -> Any:
        """The body as ``standardwebhooks`` hands it to a receiver that checks the signature."""
        return Webhook(secret).verify(self.body, self.headers)


@dataclass
class Receiver:
    """A real HTTP receiver on a loopback port, in a thread of its own (so sync process tests can
    wait on it too): records every request, answers 500 to the first ``fail_first``."""

    fail_first: int = 0
    status_after: int = 200
    received: list[Received] = field(default_factory=list)
    port: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def got(self, count: int) -> list[Received]:
        """The requests so far once there are ``count`` (else an empty list, falsy for ``eventually``)."""
        with self._lock:
            return list(self.received) if len(self.received) >= count else []

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        with self._lock:
            self.received.append(Received(dict(request.headers), body))
            number = len(self.received)
        return web.Response(status=500 if number <= self.fail_first else self.status_after)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with _serve(Receiver()) as serving:
        yield serving


@contextlib.contextmanager
def _serve(receiver: Receiver) -> Iterator[Receiver]:
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    stop: asyncio.Future[None] | None = None

    async def main() -> None:
        nonlocal stop
        app = web.Application()
        app.router.add_post("/hook", receiver._handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        receiver.port = runner.addresses[0][1]
        stop = loop.create_future()
        ready.set()
        await stop
        await runner.cleanup()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    ready.wait(10)
    try:
        yield receiver
    finally:
        loop.call_soon_threadsafe(lambda: stop.set_result(None) if stop and not stop.done() else None)
        thread.join(10)
        loop.close()


def _fast(api: Api) -> CallbackDispatcher:
    dispatcher: CallbackDispatcher = api.services.callbacks
    dispatcher.delays = FAST
    dispatcher.sweep_s = 0.05
    return dispatcher


def _dispatcher(api: Api) -> CallbackDispatcher:
    """Another dispatcher on the server's database, as another process would have."""
    services = api.services
    return CallbackDispatcher(CallbackStore(services.repo.engine), services.repo, services.cipher, services.links,
                              services.executor.http, delays=FAST)


async def _secret(api: Api) -> str:
    return str((await api.json("POST", "/api/v1/webhook-secret", 200))["secret"])


async def _callbacks(api: Api, task_id: int) -> list[dict[str, Any]]:
    return list((await api.json("GET", f"/api/v1/task/{task_id}/callbacks", 200))["callbacks"])


async def _settled(api: Api, task_id: int, count: int = 1) -> list[dict[str, Any]]:
    """The task's deliveries once ``count`` of them are delivered or given up."""
    async def done() -> Any:
        found = await _callbacks(api, task_id)
        return found if sum(d["delivered"] or d["given_up"] for d in found) >= count else None
    return await eventually(done, timeout=20)


async def test_an_ended_task_is_posted_signed_and_a_standard_webhooks_receiver_accepts_it(
        api: Api, receiver: Receiver) -> None:
    _fast(api)
    secret = await _secret(api)
    assert secret.startswith("whsec_")
    task = await api.execute("branch-greeting", {**GREETING, "callback_url": receiver.url})
    assert task["data"]["callback_url"] == receiver.url

    [got] = await eventually(lambda: receiver.got(1), timeout=20)
    delivered = got.verified(secret)
    assert delivered == await api.task(task["id"])  # the body GET /task/{id} answers
    assert delivered["status_name"] == "succeeded" and delivered["result"] == {"text": "Sorry to hear that, Ada."}
    assert got.headers["webhook-signature"].startswith("v1,")
    assert got.headers["Content-Type"] == "application/json"
    with pytest.raises(WebhookVerificationError):  # another secret's receiver refuses it
        Webhook("whsec_" + "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB").verify(got.body, got.headers)

    [listed] = await _settled(api, task["id"])
    assert listed["url"] == receiver.url and listed["webhook_id"] == got.headers["webhook-id"]
    assert listed["state"] == "delivered" and listed["delivered"] and not listed["given_up"]
    assert listed["next_attempt"] is None
    assert [(a["attempt"], a["status_code"], a["error"]) for a in listed["attempts"]] == [(1, 200, None)]
    assert secret not in json.dumps(listed)


async def test_500s_are_retried_under_one_webhook_id_until_the_receiver_takes_it(api: Api) -> None:
    with _serve(Receiver(fail_first=2)) as receiver:
        _fast(api)
        secret = await _secret(api)
        task = await api.execute("branch-greeting", {**GREETING, "callback_url": receiver.url})
        received = await eventually(lambda: receiver.got(3), timeout=20)
        assert len({r.headers["webhook-id"] for r in received}) == 1  # stable across retries
        assert all(r.verified(secret)["id"] == task["id"] for r in received)  # each attempt signed anew
        [listed] = await _settled(api, task["id"])
        assert [(a["attempt"], a["status_code"], a["error"]) for a in listed["attempts"]] == [
            (1, 500, "answered 500"), (2, 500, "answered 500"), (3, 200, None)]
        assert listed["delivered"]
        await asyncio.sleep(0.3)  # a delivered callback is not sent again
        assert len(receiver.received) == 3
        # /metrics counts the attempts by outcome: two failed (retried), one delivered.
        metrics = await (await api.request("GET", "/metrics")).text()
        assert 'graph_runtime_callback_attempts_total{outcome="failed"} 2.0' in metrics
        assert 'graph_runtime_callback_attempts_total{outcome="delivered"} 1.0' in metrics


async def test_a_flows_on_end_gets_every_end_failed_and_cancelled_too(api: Api, receiver: Receiver) -> None:
    _fast(api)
    secret = await _secret(api)
    flow = (FlowBuilder("noisy", on_end=[{"url": receiver.url}])
            .node("in", "start").node("nap", "test.sleep", seconds=30).node("boom", "test.fail")
            .node("out", "end").edge("in", "nap", input="x").edge("nap", "out", input="y")
            .edge("in", "boom", input="x").build())
    await api.put_flow(flow)
    failing = await api.execute("noisy", {"start_node_id": "in", "end_node_id": "boom", "result_node_id": "boom",
                                          "callback_url": receiver.url + "?also=1"})
    sleeping = await api.execute("noisy", {"start_node_id": "in", "end_node_id": "out", "result_node_id": "out"})
    await api.wait_for_status(sleeping["id"], "running")
    await api.json("POST", f"/api/v1/task/{sleeping['id']}/cancel", 202)

    received = await eventually(lambda: receiver.got(3), timeout=20)
    by_task: dict[int, list[str]] = {}
    for got in received:
        task = got.verified(secret)
        by_task.setdefault(task["id"], []).append(task["status_name"])
    assert by_task == {failing["id"]: ["failed", "failed"], sleeping["id"]: ["cancelled"]}
    listed = await _settled(api, failing["id"], 2)
    assert sorted(d["url"] for d in listed) == [receiver.url, receiver.url + "?also=1"]
    assert len({d["webhook_id"] for d in listed}) == 2


async def test_no_callback_leaves_scades_data_as_it_was_and_bad_urls_are_422s(api: Api) -> None:
    task = await api.execute("branch-greeting", GREETING)
    assert "callback_url" not in task["data"]
    assert await _callbacks(api, task["id"]) == []
    for bad in ("ftp://example.com/x", "example.com/hook", "http://", 7):
        answer = await api.execute("branch-greeting", {"callback_url": bad}, status=422)
        assert answer["error"]["field"] == "callback_url", bad
    flow = FlowBuilder("bad-hook", on_end=[{"url": "file:///etc/passwd"}]).node("in", "start").build()
    answer = await api.put_flow(flow, status=422)
    assert answer["error"]["field"] == "on_end.0.url"
    assert (await api.json("GET", "/api/v1/tasks", 200))["tasks"][0]["id"] == task["id"]  # nothing queued
    await api.json("GET", "/api/v1/task/999999/callbacks", 404)
    await api.json("GET", "/api/v1/task/abc/callbacks", 404)


async def test_the_secret_is_admin_only_rotates_and_never_leaks(api: Api, receiver: Receiver,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    _fast(api)
    execute_key = await api.new_key("execute")
    await api.json("POST", "/api/v1/webhook-secret", 403, token=execute_key)
    task = await api.execute("branch-greeting", {**GREETING, "callback_url": receiver.url})
    [first] = await eventually(lambda: receiver.got(1), timeout=20)
    shown = await _secret(api)  # signed before anyone asked: the first answer shows that secret
    first.verified(shown)
    rotated = await _secret(api)
    assert rotated != shown
    second_task = await api.json("POST", "/api/v1/scade/flow/branch-greeting/execute", 200,  # Scade's path too
                                 json={**GREETING, "callback_url": receiver.url})
    [_, second] = await eventually(lambda: receiver.got(2), timeout=20)
    assert second.verified(rotated)["id"] == second_task["id"]
    with pytest.raises(WebhookVerificationError):
        second.verified(shown)
    listed = await api.json("GET", f"/api/v1/task/{task['id']}/callbacks", 200, token=execute_key)
    everything = json.dumps(listed) + json.dumps(await api.task(task["id"])) + caplog.text
    for secret in (shown, rotated):
        assert secret not in everything and secret.removeprefix("whsec_") not in everything


async def test_a_refused_url_is_a_failed_attempt_retried_then_given_up(aiohttp_client: Any, settings: Settings,
                                                                      receiver: Receiver) -> None:
    guarded = settings.model_copy(update={"http_allow_private": False})
    client = await aiohttp_client(create_app(guarded, registry=registry_with_test_types()))
    _, token = await auth.issue_key(client.server.app[SERVICES].repo, "admin", "admin")
    api = Api(client, token)
    _fast(api)
    task = await api.execute("branch-greeting", {**GREETING, "callback_url": receiver.url})

    async def retried() -> Any:
        found = await _callbacks(api, task["id"])
        return found[0] if found and len(found[0]["attempts"]) >= 2 else None
    listed = await eventually(retried, timeout=20)
    assert listed["attempts"][0]["status_code"] is None
    assert listed["attempts"][0]["error"].startswith("ssrf_blocked: refused to connect to 127.0.0.1")
    assert receiver.received == []  # never reached

    # 24 h later (the deadline moved, not waited for), the next failure gives up.
    async with api.services.repo.engine.begin() as conn:
        await conn.execute(sa.update(callback_delivery).values(deadline=convert.utcnow()))
    [done] = await _settled(api, task["id"])
    assert done["state"] == GIVEN_UP and done["given_up"] and done["next_attempt"] is None
    attempts = len(done["attempts"])
    await asyncio.sleep(0.3)
    assert len((await _callbacks(api, task["id"]))[0]["attempts"]) == attempts


async def test_two_dispatchers_on_one_database_send_each_delivery_once(api: Api, receiver: Receiver) -> None:
    await api.services.callbacks.stop()  # the test drives two dispatchers of its own
    tasks = [await api.execute("branch-greeting", {**GREETING, "callback_url": f"{receiver.url}?n={n}"})
             for n in range(30)]
    for task in tasks:
        await api.wait_for_status(task["id"], "succeeded")
    one, other = (_dispatcher(api) for _ in range(2))
    await asyncio.gather(one.run_once(), other.run_once(), one.run_once(), other.run_once())
    ids = [r.headers["webhook-id"] for r in receiver.received]
    assert len(ids) == 30 and len(set(ids)) == 30


@pytest.mark.postgres
async def test_on_postgresql_too(aiohttp_client: Any, receiver: Receiver, tmp_path: Path) -> None:
    user, reason = await pg.find_user()
    if user is None:
        pytest.skip(f"PostgreSQL is not reachable at {pg.PG_HOST} ({reason})")
    url = await pg.create_database(user)
    try:
        settings = Settings(database_url=url, flows_dir=SAMPLE_FLOWS, poll_interval_s=0.2, http_allow_private=True,
                            files_dir=tmp_path / "files")
        client = await aiohttp_client(create_app(settings, registry=registry_with_test_types()))
        _, token = await auth.issue_key(client.server.app[SERVICES].repo, "pg-admin", "admin")
        api = Api(client, token)
        receiver.fail_first = 1
        dispatcher = _fast(api)
        secret = await _secret(api)
        task = await api.execute("branch-greeting", {**GREETING, "callback_url": receiver.url})
        received = await eventually(lambda: receiver.got(2), timeout=20)
        assert [r.verified(secret)["id"] for r in received] == [task["id"], task["id"]]
        [listed] = await _settled(api, task["id"])
        assert [a["status_code"] for a in listed["attempts"]] == [500, 200]
        # A second dispatcher on the database claims nothing the first one holds or delivered.
        other = _dispatcher(api)
        assert await asyncio.gather(dispatcher.run_once(), other.run_once()) == [0, 0]
        await client.close()
    finally:
        await pg.drop_database(url)


# -- a restart between a failed attempt and its retry: real server processes --------------------


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield sqlite_url(tmp_path / "callbacks.db")
        return
    async with pg_database() as url:
        yield url


@pytest.mark.timeout(120)
def test_a_retry_after_a_restart_is_sent_by_the_new_process(database: str, tmp_path: Path) -> None:
    with _serve(Receiver(fail_first=1)) as receiver:
        args = ["--db", database, "--flows", str(PROCESS_FLOWS), "--http-allow-private", "true",
                "--poll-interval-s", "0.2"]
        first = _server(args, tmp_path)
        try:
            token = first.keys_printed[0]
            secret = first.request("POST", "/api/v1/webhook-secret", token=token)[1]["secret"]
            status, task = first.request("POST", "/api/v1/flow/branch-greeting/execute", token=token,
                                         body={**GREETING, "callback_url": receiver.url})
            assert status == 201
            wait_until(lambda: receiver.got(1), timeout=30, what="the first attempt")
            wait_until(lambda: _attempts(first, token, task["id"]), timeout=30, what="the failed attempt recorded")
            first.proc.send_signal(signal.SIGKILL)  # the retry is due in under 5 s: it is the next process's
            first.proc.wait(10)
        finally:
            first.kill()
        [failed] = receiver.received
        assert failed.verified(secret)["id"] == task["id"]

        second = _server(args, tmp_path)
        try:
            _, retried = wait_until(lambda: receiver.got(2), timeout=30, what="the retry after the restart")
            assert retried.headers["webhook-id"] == failed.headers["webhook-id"]
            assert retried.verified(secret)["status_name"] == "succeeded"
            listed = wait_until(lambda: _delivered(second, token, task["id"]), timeout=30, what="recorded")
            assert [(a["attempt"], a["status_code"]) for a in listed["attempts"]] == [(1, 500), (2, 200)]
        finally:
            second.kill()
        assert len(receiver.received) == 2


def _server(args: list[str], cwd: Path) -> ServerProcess:
    server = ServerProcess(args, cwd=cwd, port=free_port())
    try:
        server.wait_ready()
    except BaseException:
        server.kill()
        raise
    return server


def _attempts(server: ServerProcess, token: str, task_id: int) -> list[dict[str, Any]]:
    status, answer = server.request("GET", f"/api/v1/task/{task_id}/callbacks", token=token)
    assert status == 200, answer
    return answer["callbacks"][0]["attempts"] if answer["callbacks"] else []


def _delivered(server: ServerProcess, token: str, task_id: int) -> dict[str, Any]:
    status, answer = server.request("GET", f"/api/v1/task/{task_id}/callbacks", token=token)
    assert status == 200, answer
    return answer["callbacks"][0] if answer["callbacks"] and answer["callbacks"][0]["delivered"] else {}


def test_the_cli_shows_the_secret_then_rotates_it(db_url: str, tmp_path: Path) -> None:
    shown = [run_cli("webhook-secret", "--db", db_url, cwd=tmp_path) for _ in range(2)]
    assert [done.returncode for done in shown] == [0, 0], [done.stderr for done in shown]
    first, second = (done.stdout.strip() for done in shown)
    assert first.startswith("whsec_") and second.startswith("whsec_") and first != second
    Webhook(second)  # a secret the package reads
    assert first not in shown[0].stderr + shown[1].stderr
