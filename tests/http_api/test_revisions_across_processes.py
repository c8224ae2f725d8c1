"""An execute runs the flow's latest revision even when another process stored it: two servers on
one database (SQLite and PostgreSQL), each remembering the latest revision it saw so an execute
needs no read of it, the insert checking that it still is the latest."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from http_api import auth
from http_api.app import create_app
from http_api.body import SERVICES
from http_api.settings import Settings
from tests.conftest import Api
from tests.reliability.cluster import pg_database


def greeting(word: str) -> dict[str, Any]:
    """start(text) → end(text): the result says which revision ran."""
    return {"id": "greet", "nodes": [{"id": "s", "type": "start", "settings": {"data": {"text": word}}},
                                     {"id": "e", "type": "end"}],
            "edges": [{"from": "s", "output": "text", "to": "e", "input": "text"}]}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def database_url(request: pytest.FixtureRequest, db_url: str) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield db_url
        return
    async with pg_database() as url:
        yield url


@pytest.fixture
async def two_servers(database_url: str, aiohttp_client: Callable[..., Any]) -> AsyncIterator[tuple[Api, Api]]:
    settings = Settings(database_url=database_url, flows_dir=None, poll_interval_s=0.2)
    first = await aiohttp_client(create_app(settings))
    second = await aiohttp_client(create_app(settings))
    _, token = await auth.issue_key(first.server.app[SERVICES].repo, "ops", "admin")
    yield Api(first, token), Api(second, token)


async def test_an_execute_runs_the_revision_another_server_stored_since(two_servers: tuple[Api, Api]) -> None:
    pusher, runner = two_servers
    await pusher.put_flow(greeting("first"))
    task = await runner.execute("greet", params={"wait": "10"})
    assert (task["revision"], task["result"]) == (1, {"text": "first"})  # the runner has now seen revision 1
    again = await runner.execute("greet", params={"wait": "10"})
    assert again["revision"] == 1, "nothing new: the revision it saw"

    await pusher.put_flow(greeting("second"))  # stored by the other server: the runner was not told
    task = await runner.execute("greet", params={"wait": "10"})
    assert (task["revision"], task["result"]) == (2, {"text": "second"})
    without_wait = await runner.execute("greet", {"node_settings": {"s": {"data": {"text": "third"}}}})
    assert without_wait["revision"] == 2

    assert (await pusher.request("DELETE", "/api/v1/flows/greet")).status < 300
    gone = await runner.execute("greet", status=404)
    assert gone["error"]["code"] == "flow_not_found"
    assert await runner.services.repo.count_tasks() == 4, "the refused execute wrote nothing"


async def test_a_request_only_the_newer_revision_accepts_runs_it(two_servers: tuple[Api, Api]) -> None:
    pusher, runner = two_servers
    await pusher.put_flow(greeting("first"))
    assert (await runner.execute("greet", params={"wait": "10"}))["revision"] == 1  # the runner has seen revision 1
    grown = greeting("second")
    grown["nodes"] += [{"id": "s2", "type": "start", "settings": {"data": {"text": "other"}}}, {"id": "e2", "type": "end"}]
    grown["edges"].append({"from": "s2", "output": "text", "to": "e2", "input": "text"})
    await pusher.put_flow(grown)  # a new start and end the runner's remembered revision does not have
    body = {"start_node_id": "s2", "end_node_id": "e2", "result_node_id": "e2"}
    task = await runner.execute("greet", body, params={"wait": "10"})
    assert (task["revision"], task["result"]) == (2, {"text": "other"})
    refused = await runner.execute("greet", {**body, "start_node_id": "nowhere"}, status=422)
    assert "nowhere" in refused["error"]["message"], "a request no revision accepts is still refused"
