"""Server-side ceilings over HTTP: a request may lower them, never raise them, and is told so
before anything is queued; a node output over MAX_OUTPUT_BYTES fails that node, clearly."""

from __future__ import annotations

from tests.conftest import Api
from tests.support import FlowBuilder


async def test_a_response_ceiling_above_the_servers_is_a_422_naming_the_setting(api: Api) -> None:
    before = await api.json("GET", "/api/v1/tasks?flow_id=http-fetch", 200)
    body = await api.execute("http-fetch", {"node_settings": {"fetch": {"max_response_bytes": 2_000_000_000}}}, 422)
    assert body["error"]["field"] == "node_settings.fetch.max_response_bytes"
    assert "ceiling" in body["error"]["message"] and "MAX_RESPONSE_BYTES" in body["error"]["message"]
    after = await api.json("GET", "/api/v1/tasks?flow_id=http-fetch", 200)
    assert after["tasks"] == before["tasks"], "a refused request queues nothing"


async def test_a_node_output_over_max_output_bytes_fails_that_node_and_the_server_answers(api: Api) -> None:
    limit = api.services.executor.limits.max_output_bytes
    await api.put_flow(FlowBuilder("too-big").node("s", "start", data={}).node("big", "test.big", chars=limit + 1)
                       .node("e", "end").edge("s", "big", input="v").edge("big", "e").build())
    queued = await api.execute("too-big")
    task = await api.wait_for_status(queued["id"], "failed")
    assert task["error"]["code"] == "output_too_large" and task["error"]["node_id"] == "big"
    assert task["nodes"]["big"]["status"] == "failed" and task["nodes"]["e"]["status"] == "skipped"
    assert (await api.request("GET", "/healthz")).status == 200
