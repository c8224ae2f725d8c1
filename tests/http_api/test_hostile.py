"""Requests that tried to break the server in review: each answers 4xx, never 500, and writes nothing."""

from __future__ import annotations

import asyncio
import gzip
import time
from typing import Any

from aiohttp.test_utils import make_mocked_request

from http_api.access_log import mask
from tests.conftest import Api
from tests.http_api.test_execute import SCADE_BODY
from tests.support import FlowBuilder

EXECUTE = "/api/v1/flow/caption-image/execute"


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


async def test_deeply_nested_bodies_are_refused(api: Api) -> None:
    body = await api.execute("caption-image", {"init_context": nested(300)}, status=422)
    assert "deeper than" in body["error"]["message"]
    assert (await api.request("PUT", "/api/v1/flows/deep", json={"nodes": [], "x": nested(300)})).status == 422
    assert await api.services.repo.count_tasks() == 0


async def test_non_ascii_digits_are_not_task_ids(api: Api) -> None:
    for path in ("/api/v1/task/%C2%B2", "/api/v1/task/%EF%BC%91", "/api/v1/task/%C2%B2/cancel"):
        method = "POST" if path.endswith("cancel") else "GET"
        assert (await api.request(method, path)).status == 404, path
    assert (await api.request("POST", EXECUTE, json={}, params={"revision": "1_0"})).status == 422


async def test_a_body_that_does_not_decompress_is_400(api: Api) -> None:
    response = await api.request("POST", EXECUTE, data=b"not gzip at all",
                                 headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})
    assert response.status == 400
    good = await api.request("POST", EXECUTE, data=gzip.compress(b"{}"),
                             headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})
    assert good.status == 201


def test_the_access_log_masks_keys_however_the_name_is_spelled() -> None:
    for url in ("/api/v1/flows?execution-key=SECRET", "/api/v1/flows?execution%2Dkey=SECRET&x=1",
                "/api/v1/flows?Execution-Key=SECRET"):
        logged = mask(make_mocked_request("GET", url))
        assert "SECRET" not in logged and "***" in logged, logged


async def test_idempotency_compares_parsed_json_not_key_order(api: Api) -> None:
    headers = {"Idempotency-Key": "k-order"}
    first = await api.execute("caption-image", {"start_node_id": "SYnn-start", "end_node_id": "y5iI-end"},
                              headers=headers)
    again = await api.execute("caption-image", {"end_node_id": "y5iI-end", "start_node_id": "SYnn-start"},
                              status=200, headers=headers)
    assert again["id"] == first["id"]


async def test_an_idempotent_replay_survives_a_change_of_the_flow(api: Api) -> None:
    definition = FlowBuilder("idem").node("s", "start").node("e", "end").edge("s", "e").build()
    await api.put_flow(definition)
    body = {"node_settings": {"s": {"data": {"x": 1}}}}
    first = await api.execute("idem", body, headers={"Idempotency-Key": "k1"})
    await api.put_flow(FlowBuilder("idem").node("t", "start").node("e", "end").edge("t", "e").build())
    replay = await api.execute("idem", body, status=200, headers={"Idempotency-Key": "k1"})
    assert replay["id"] == first["id"] and replay["revision"] == 1


async def test_every_waiter_is_answered_when_the_task_ends(api: Api) -> None:
    await api.put_flow(FlowBuilder("nap").node("z", "test.sleep", seconds=1.5).build())
    headers = {"Idempotency-Key": "same-task"}
    body = {"start_node_id": "z", "end_node_id": "z"}
    started = time.monotonic()
    short, long_ = await asyncio.gather(
        api.execute("nap", body, headers=headers, params={"wait": "1"}, status=None),
        api.execute("nap", body, headers=headers, params={"wait": "20"}, status=None),
    )
    assert {short["id"]} == {long_["id"]}
    assert long_["status"] == 3
    assert time.monotonic() - started < 10, "the long waiter must be answered when the task ends, not at 20 s"


async def test_concurrent_cancels_all_see_the_task_cancelled(api: Api) -> None:
    await api.put_flow(FlowBuilder("long").node("z", "test.sleep", seconds=30).build())
    task = await api.execute("long", {"start_node_id": "z", "end_node_id": "z"})
    await api.wait_for_status(task["id"], "running")
    answers = await asyncio.gather(*(api.request("POST", f"/api/v1/task/{task['id']}/cancel") for _ in range(8)))
    bodies = [await a.json() for a in answers]
    assert {a.status for a in answers} <= {202, 409}
    final = await api.wait_for_status(task["id"], "cancelled")
    assert final["nodes"]["z"]["status"] == "cancelled"
    assert all(b.get("status_name", "cancelled") == "cancelled" or b["error"]["code"] == "task_ended" for b in bodies)


async def test_a_setting_an_edge_already_feeds_is_422(api: Api) -> None:
    body = await api.execute("caption-image", {**SCADE_BODY, "node_settings": {"prompt": {"style": "x"}}}, status=422)
    assert body["error"]["field"] == "node_settings.prompt.style"
