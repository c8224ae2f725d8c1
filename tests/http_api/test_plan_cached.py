"""The plan's ``cached`` list over HTTP (SPEC §9): after a run, planning the same request names the
deterministic nodes the output cache would answer, counts them 0 in ``estimated_cost``, and still
writes nothing — not even a cache entry's ``last_hit``.

A real server from the production factory on a real SQLite file; a priced deterministic test type.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest_asyncio
from aiohttp import web
from sqlalchemy.engine import make_url

from http_api import auth
from http_api.app import create_app
from http_api.body import SERVICES
from http_api.settings import Settings
from nodes.contract import CostModel
from tests.conftest import Api
from tests.support import Echo, FileSize, FlowBuilder, registry_with_test_types


class CachedEcho(Echo):
    """``test.echo`` declared deterministic, at 0.5 a run: a cached node has a cost to leave out."""

    type = "test.cached_echo"
    deterministic = True


class CachedFileSize(FileSize):
    type = "test.cached_file_size"
    deterministic = True
    cost = CostModel(per_run=0.25)


# fixed: no inputs, cacheable; off: no inputs, cache false; fed: its word comes from s, which runs.
GREET = (FlowBuilder("greet").node("s", "start", data={"name": "Ada"}).node("fixed", "test.cached_echo", word="hi")
         .node("off", "test.cached_echo", word="ho", cache=False).node("fed", "test.cached_echo")
         .node("e", "end").edge("s", "fed", output="name", input="word")
         .edge("fixed", "e", input="fixed").edge("off", "e", input="off").edge("fed", "e", input="fed").build())
SIZE = (FlowBuilder("size").node("make", "test.file_make").node("size", "test.cached_file_size")
        .edge("make", "size", output="file", input="file").build())


def size_of(file: Any) -> dict[str, Any]:
    """Run only ``size``, on ``file``."""
    return {"start_node_id": "size", "end_node_id": "size", "node_settings": {"size": {"file": file}}}


async def open_api(aiohttp_client: Any, settings: Settings) -> Api:
    registry = registry_with_test_types()
    registry.register(CachedEcho)
    registry.register(CachedFileSize)
    client = await aiohttp_client(create_app(settings, registry=registry))
    _, token = await auth.issue_key(client.server.app[SERVICES].repo, "test-admin", "admin")
    api = Api(client, token)
    for flow in (GREET, SIZE):
        await api.put_flow(flow)
    return api


@pytest_asyncio.fixture
async def cache_api(aiohttp_client: Any, settings: Settings) -> AsyncIterator[Api]:
    yield await open_api(aiohttp_client, settings)


async def plan_of(api: Api, flow_id: str, body: dict[str, Any]) -> Any:
    return await api.json("POST", f"/api/v1/flow/{flow_id}/plan", 200, json=body)


async def run(api: Api, flow_id: str, body: dict[str, Any]) -> Any:
    task = await api.execute(flow_id, body, params={"wait": 10})
    assert task["status_name"] == "succeeded", task["error"]
    return task


def read(settings: Settings, sql: str) -> list[Any]:
    """Rows straight from the database file, read-only."""
    path = make_url(settings.database_url).database
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        return conn.execute(sql).fetchall()


def last_hits(settings: Settings) -> dict[str, str]:
    """Each cache entry's ``last_hit``."""
    return dict(read(settings, "SELECT key, last_hit FROM node_cache"))


async def test_after_a_run_the_same_request_plans_its_deterministic_nodes_as_cached(
        cache_api: Api, settings: Settings) -> None:
    before = await plan_of(cache_api, "greet", {})
    assert before["cached"] == [] and before["estimated_cost"] == {"min": 1.5, "max": 1.5}
    await run(cache_api, "greet", {})

    cache_api.services.repo.cache_touch_after_s = 0.0  # a read through cache_get would now move last_hit
    hits = last_hits(settings)
    after = await plan_of(cache_api, "greet", {})
    assert after["cached"] == ["fixed"], "not `off` (cache: false), not `fed` (its input is made in this run)"
    assert after["estimated_cost"] == {"min": 1.0, "max": 1.0}, "the cached node counts 0"
    assert last_hits(settings) == hits, "a plan moved last_hit"
    assert await cache_api.services.repo.count_tasks() == 1

    again = await run(cache_api, "greet", {})
    assert [n for n in ("fixed", "off", "fed") if again["nodes"][n]["cached"]] == ["fixed", "fed"]
    assert last_hits(settings) != hits, "the run's hits moved last_hit: the check above could fail"


async def test_other_settings_are_not_cached(cache_api: Api) -> None:
    await run(cache_api, "greet", {})
    answer = await plan_of(cache_api, "greet", {"node_settings": {"fixed": {"word": "hello"}}})
    assert answer["cached"] == []


async def test_a_rerun_from_a_node_lists_it_when_its_inputs_come_from_the_earlier_task(cache_api: Api) -> None:
    earlier = await run(cache_api, "greet", {})
    answer = await plan_of(cache_api, "greet", {"start_node_id": "fed", "from_task_id": earlier["id"]})
    assert sorted(answer["cached"]) == ["fed", "fixed"]
    assert answer["estimated_cost"] == {"min": 0.5, "max": 0.5}  # only `off` runs
    changed = {"start_node_id": "fed", "from_task_id": earlier["id"], "node_settings": {"fed": {"word": "Bob"}}}
    assert (await plan_of(cache_api, "greet", changed))["cached"] == ["fixed"]  # node_settings win


async def upload(api: Api, data: bytes) -> dict[str, Any]:
    form = aiohttp.FormData()
    form.add_field("file", data, filename="a.bin", content_type="application/octet-stream")
    return (await api.json("POST", "/api/v1/files", 201, data=form))["file"]


async def test_a_file_counts_by_its_bytes(cache_api: Api) -> None:
    one, two = await upload(cache_api, b"same bytes"), await upload(cache_api, b"same bytes")
    await run(cache_api, "size", size_of({"$file": one["$file"]}))
    same = await plan_of(cache_api, "size", size_of({"$file": two["$file"]}))
    assert same["cached"] == ["size"] and same["estimated_cost"] == {"min": 0.0, "max": 0.0}
    other = await upload(cache_api, b"other bytes")
    assert (await plan_of(cache_api, "size", size_of(other)))["cached"] == []


async def test_a_url_in_a_file_setting_is_not_fetched(aiohttp_client: Any, aiohttp_server: Any,
                                                      settings: Settings) -> None:
    asked: list[str] = []

    async def origin(request: web.Request) -> web.Response:
        asked.append(request.path)
        return web.Response(body=b"same bytes")

    app = web.Application()
    app.router.add_get("/a.bin", origin)
    server = await aiohttp_server(app)
    api = await open_api(aiohttp_client, settings.model_copy(update={"http_allow_private": True}))
    by_url = size_of(str(server.make_url("/a.bin")))
    await run(api, "size", by_url)
    assert asked == ["/a.bin"], "the run fetches it (so a plan could)"
    files = read(settings, "SELECT id FROM file")
    assert (await plan_of(api, "size", by_url))["cached"] == []  # its bytes are not known without fetching
    assert asked == ["/a.bin"] and read(settings, "SELECT id FROM file") == files, "the plan fetched the URL"


async def test_with_the_cache_off_nothing_is_listed(aiohttp_client: Any, settings: Settings) -> None:
    api = await open_api(aiohttp_client, settings.model_copy(update={"cache_max_bytes": 0}))
    await run(api, "greet", {})
    assert (await plan_of(api, "greet", {}))["cached"] == []
