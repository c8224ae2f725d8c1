"""The output cache over HTTP (SPEC §9): a deterministic node run twice with the same parameters
runs once; the second task shows it ``cached`` with cost 0 and what it saved.

A real server from the production factory (real SQLite file, real file store), priced test node
types declared deterministic here, and the OpenAI stand-in on loopback for ``llm.chat``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, ClassVar

import aiohttp
import pytest_asyncio

from http_api import auth
from http_api.app import create_app
from http_api.body import SERVICES
from http_api.settings import Settings
from nodes.contract import CostModel, RunContext
from tests import openai_standin
from tests.conftest import Api
from tests.support import Echo, FileMake, FileSize, FlowBuilder, registry_with_test_types


class PricedEcho(Echo):
    """``test.echo`` declared deterministic: it costs 0.5 a run, so a hit has something to save."""

    type = "test.cached_echo"
    deterministic = True
    runs: ClassVar[list[str]] = []

    async def run(self, params: Any, ctx: RunContext) -> Any:
        PricedEcho.runs.append(ctx.node_id)
        return self.Output(**params.model_dump())


class CachedFileSize(FileSize):
    type = "test.cached_file_size"
    deterministic = True
    cost = CostModel(per_run=0.25)
    runs: ClassVar[int] = 0

    async def run(self, params: Any, ctx: RunContext) -> Any:
        CachedFileSize.runs += 1
        return await super().run(params, ctx)


class CachedFileMake(FileMake):
    type = "test.cached_file_make"
    deterministic = True
    runs: ClassVar[int] = 0

    async def run(self, params: Any, ctx: RunContext) -> Any:
        CachedFileMake.runs += 1
        return await super().run(params, ctx)


ECHO = FlowBuilder("echo").node("a", "test.cached_echo", word="hi").node("b", "test.cached_echo", n=2) \
    .edge("a", "b", output="word", input="word").build()
ECHO_RUN = {"start_node_id": "a", "end_node_id": "b", "result_node_id": "b"}
SIZE = FlowBuilder("size").node("make", "test.file_make").node("size", "test.cached_file_size") \
    .edge("make", "size", output="file", input="file").build()
SIZE_RUN = {"start_node_id": "size", "end_node_id": "size", "result_node_id": "size"}
MAKE = FlowBuilder("make").node("make", "test.cached_file_make", text="cached").build()
MAKE_RUN = {"start_node_id": "make", "end_node_id": "make", "result_node_id": "make"}
CHAT = FlowBuilder("chat").node("ask", "llm.chat", model="m", prompt="Say hi", prices={"input": 1000, "output": 2000}) \
    .build()
CHAT_RUN = {"start_node_id": "ask", "end_node_id": "ask", "result_node_id": "ask"}


@pytest_asyncio.fixture
async def cache_api(aiohttp_client: Any, settings: Settings) -> AsyncIterator[Api]:
    registry = registry_with_test_types()
    registry.register(PricedEcho)
    registry.register(CachedFileSize)
    registry.register(CachedFileMake)
    PricedEcho.runs.clear()
    CachedFileSize.runs = CachedFileMake.runs = 0
    client = await aiohttp_client(create_app(settings, registry=registry))
    _, token = await auth.issue_key(client.server.app[SERVICES].repo, "test-admin", "admin")
    api = Api(client, token)
    for flow in (ECHO, SIZE, MAKE, CHAT):
        await api.put_flow(flow)
    yield api


@pytest_asyncio.fixture
async def standin(aiohttp_server: Any) -> Any:
    return await aiohttp_server(openai_standin.make_app())


async def run(api: Api, flow_id: str, body: dict[str, Any]) -> dict[str, Any]:
    task = await api.execute(flow_id, body, params={"wait": 10})
    assert task["status_name"] == "succeeded", task["error"]
    return task


async def test_a_second_identical_run_is_served_from_the_cache(cache_api: Api) -> None:
    first = await run(cache_api, "echo", ECHO_RUN)
    assert [first["nodes"][n]["cached"] for n in "ab"] == [False, False]
    assert first["execution_cost"] == 1.0 and first["saved_cost"] == 0.0
    second = await run(cache_api, "echo", ECHO_RUN)
    assert PricedEcho.runs == ["a", "b"], "the second task ran nothing"
    for node_id in "ab":
        node = second["nodes"][node_id]
        assert (node["cached"], node["cost"], node["saved_cost"], node["attempts"]) == (True, 0.0, 0.5, 0)
        assert node["status"] == "succeeded"
    assert second["result"] == first["result"] == {"word": "hi", "n": 2}
    assert (second["execution_cost"], second["saved_cost"]) == (0.0, first["execution_cost"])
    assert (await cache_api.task(second["id"]))["nodes"]["b"]["cached"] is True  # persisted, not just in memory


async def test_the_key_is_the_parameters_wherever_they_came_from(cache_api: Api) -> None:
    alone = {"start_node_id": "b", "end_node_id": "b", "result_node_id": "b", "node_settings": {"b": {"word": "hi"}}}
    await run(cache_api, "echo", alone)  # b's word given directly
    task = await run(cache_api, "echo", ECHO_RUN)  # b's word from a: the same parameters
    assert [task["nodes"][n]["cached"] for n in "ab"] == [False, True] and PricedEcho.runs == ["b", "a"]


async def test_other_parameters_miss_and_cache_false_disables(cache_api: Api) -> None:
    await run(cache_api, "echo", ECHO_RUN)
    other = await run(cache_api, "echo", {**ECHO_RUN, "node_settings": {"a": {"word": "ho"}}})
    assert [other["nodes"][n]["cached"] for n in "ab"] == [False, False]
    off = {**ECHO_RUN, "node_settings": {"a": {"cache": False}, "b": {"cache": False}}}
    uncached = await run(cache_api, "echo", off)
    assert [uncached["nodes"][n]["cached"] for n in "ab"] == [False, False]
    assert uncached["execution_cost"] == 1.0 and len(PricedEcho.runs) == 6


async def test_a_cache_setting_that_is_not_a_boolean_is_a_422(cache_api: Api) -> None:
    body = await cache_api.execute("echo", {**ECHO_RUN, "node_settings": {"a": {"cache": "yes"}}}, status=422)
    assert body["error"]["field"].endswith("cache")


async def upload(api: Api, data: bytes, name: str = "a.bin") -> dict[str, Any]:
    form = aiohttp.FormData()
    form.add_field("file", data, filename=name, content_type="application/octet-stream")
    return (await api.json("POST", "/api/v1/files", 201, data=form))["file"]


async def test_a_file_is_keyed_by_its_bytes_not_its_id(cache_api: Api) -> None:
    one, two = await upload(cache_api, b"same bytes"), await upload(cache_api, b"same bytes")
    assert one["$file"] != two["$file"]
    first = await run(cache_api, "size", {**SIZE_RUN, "node_settings": {"size": {"file": {"$file": one["$file"]}}}})
    second = await run(cache_api, "size", {**SIZE_RUN, "node_settings": {"size": {"file": {"$file": two["$file"]}}}})
    assert second["nodes"]["size"]["cached"] is True and second["saved_cost"] == 0.25
    assert second["result"] == first["result"] and CachedFileSize.runs == 1
    other = await upload(cache_api, b"other bytes")
    third = await run(cache_api, "size", {**SIZE_RUN, "node_settings": {"size": {"file": {"$file": other["$file"]}}}})
    assert third["nodes"]["size"]["cached"] is False and CachedFileSize.runs == 2


async def test_a_cached_output_whose_file_was_deleted_is_a_miss(cache_api: Api) -> None:
    first = await run(cache_api, "make", MAKE_RUN)
    again = await run(cache_api, "make", MAKE_RUN)
    assert again["nodes"]["make"]["cached"] is True and again["result"]["file"]["$file"] == first["result"]["file"]["$file"]
    response = await cache_api.request("DELETE", f"/api/v1/files/{first['result']['file']['$file']}")
    assert response.status in (200, 204), await response.text()
    fresh = await run(cache_api, "make", MAKE_RUN)
    assert fresh["nodes"]["make"]["cached"] is False and CachedFileMake.runs == 2
    assert fresh["result"]["file"]["$file"] != first["result"]["file"]["$file"]
    assert (await run(cache_api, "make", MAKE_RUN))["nodes"]["make"]["cached"] is True  # filled again


async def test_llm_chat_is_cached_at_temperature_0_only(cache_api: Api, standin: Any) -> None:
    def body(temperature: float) -> dict[str, Any]:
        settings = {"base_url": str(standin.make_url("/v1")), "temperature": temperature}
        return {**CHAT_RUN, "node_settings": {"ask": settings}}

    recorded = standin.app[openai_standin.STANDIN].requests
    first = await run(cache_api, "chat", body(0))
    second = await run(cache_api, "chat", body(0))
    assert len(recorded) == 1 and first["execution_cost"] > 0
    assert second["nodes"]["ask"]["cached"] is True and second["saved_cost"] == first["execution_cost"]
    assert second["result"] == first["result"]
    for _ in range(2):
        warm = await run(cache_api, "chat", body(0.7))
        assert warm["nodes"]["ask"]["cached"] is False
    assert len(recorded) == 3
