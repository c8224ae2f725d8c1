"""Webhook triggers: a flow's hook starts a task with no server key, wrong keys are 404, keys stay secret."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from aiohttp.test_utils import make_mocked_request

from graph_runtime import errors as flow_errors
from graph_runtime import flow as flow_model
from http_api import redaction
from http_api.access_log import mask
from tests.conftest import Api
from tests.support import FlowBuilder

KEY = "hook-key-0123456789abcdef"
OTHER_KEY = "another-key-0123456789"


def hooked(flow_id: str = "hooked", **fields: Any) -> dict[str, Any]:
    return (FlowBuilder(flow_id, triggers=[{"type": "webhook", "key": OTHER_KEY}, {"type": "webhook", "key": KEY}],
                        **fields)
            .node("in", "start", data={"fixed": 1}).node("out", "end").edge("in", "out", input="request").build())


async def test_a_hook_starts_a_task_with_body_headers_and_query_as_its_data(api: Api) -> None:
    await api.put_flow(hooked())
    response = await api.client.post(f"/api/v1/hooks/hooked/{KEY}?source=ci&tag=a&tag=b", json={"event": "push"},
                                     headers={"X-Event": "push", "Authorization": "Bearer not-ours",
                                              "Cookie": "session=s3cret"})
    started = await response.json()
    assert response.status == 201, started
    assert started["flow_id"] == "hooked" and started["status_name"] == "queued"
    task = await api.wait_for_status(started["id"], "succeeded")
    request = task["result"]["request"]
    assert request["fixed"] == 1  # merged over the start node's own data
    assert request["body"] == {"event": "push"}
    assert request["query"] == {"source": "ci", "tag": ["a", "b"]}
    assert request["headers"]["x-event"] == "push"
    assert "authorization" not in request["headers"] and "cookie" not in request["headers"]
    assert "s3cret" not in str(task) and "not-ours" not in str(task)
    assert task["trigger"] == task["data"]["trigger"] == {"type": "webhook", "index": 1}
    assert task["data"]["init_context"] == {}


async def test_form_and_text_bodies_arrive_as_an_object_and_a_string(api: Api) -> None:
    await api.put_flow(hooked())
    form = await api.client.post(f"/api/v1/hooks/hooked/{KEY}", data={"a": "1", "b": "2"})
    text = await api.client.post(f"/api/v1/hooks/hooked/{KEY}", data="plain words", headers={"Content-Type": "text/plain"})
    for response, expected in ((form, {"a": "1", "b": "2"}), (text, "plain words")):
        assert response.status == 201
        task = await api.wait_for_status((await response.json())["id"], "succeeded")
        assert task["result"]["request"]["body"] == expected


async def test_wrong_key_unknown_flow_and_flow_without_hooks_are_the_same_404_and_start_nothing(api: Api) -> None:
    await api.put_flow(hooked())
    await api.put_flow(FlowBuilder("plain").node("in", "start").node("out", "end").edge("in", "out").build())
    for path in (f"/api/v1/hooks/hooked/{KEY}x", f"/api/v1/hooks/nope/{KEY}", f"/api/v1/hooks/plain/{KEY}",
                 f"/api/v1/hooks/hooked/{KEY[:-1]}"):
        response = await api.client.post(path, json={})
        assert response.status == 404, path
        assert (await response.json())["error"]["code"] == "hook_not_found"
    assert (await api.json("GET", "/api/v1/tasks", 200))["tasks"] == []


async def test_a_redelivered_webhook_id_starts_one_task(api: Api) -> None:
    await api.put_flow(hooked())
    first = await api.client.post(f"/api/v1/hooks/hooked/{KEY}", json={"n": 1}, headers={"webhook-id": "msg_1"})
    again = await api.client.post(f"/api/v1/hooks/hooked/{KEY}", json={"n": 1}, headers={"webhook-id": "msg_1"})
    assert (first.status, again.status) == (201, 200)
    assert (await first.json())["id"] == (await again.json())["id"]


async def test_trigger_keys_are_validated_and_shown_to_admin_keys_only(api: Api) -> None:
    with pytest.raises(flow_errors.FlowInvalid) as caught:
        flow_model.parse({**hooked(), "triggers": [{"type": "webhook", "key": "short"}]})
    assert "16 to 256 characters" in str(caught.value.problems)
    refused = await api.json("PUT", "/api/v1/flows/weak", 422,
                             json={**hooked("weak"), "triggers": [{"type": "webhook", "key": "short"}]})
    assert refused["error"]["field"] == "triggers.0.key"
    await api.put_flow(hooked())
    execute_key = await api.new_key("execute")
    seen = await api.json("GET", "/api/v1/flows/hooked", 200, token=execute_key)
    assert [t["key"] for t in seen["definition"]["triggers"]] == ["***", "***"]
    assert KEY not in str(seen) and seen["namespace"] == "default"
    admin = await api.json("GET", "/api/v1/flows/hooked", 200)
    assert admin["definition"]["triggers"][1]["key"] == KEY


async def test_triggers_are_listed_per_flow_without_their_keys(api: Api) -> None:
    await api.put_flow(hooked())
    listed = await api.json("GET", "/api/v1/triggers", 200, token=await api.new_key("execute"))
    mine = [t for t in listed["triggers"] if t["flow_id"] == "hooked"]
    assert [(t["type"], t["index"], t["next"]) for t in mine] == [("webhook", 0, None), ("webhook", 1, None)]
    assert KEY not in str(listed) and OTHER_KEY not in str(listed)
    assert (await api.client.get("/api/v1/triggers")).status == 401


async def test_no_log_line_shows_a_hook_key(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    await api.put_flow(hooked())
    caplog.set_level(logging.DEBUG)
    await api.client.post(f"/api/v1/hooks/hooked/{KEY}", json={})
    await api.client.post(f"/api/v1/hooks/hooked/{KEY}-wrong", json={})
    lines = [record.getMessage() for record in caplog.records]
    assert any("webhook" in line for line in lines)
    assert not [line for line in lines if KEY in line]


def test_the_access_log_and_the_log_filter_mask_hook_keys() -> None:
    for path in (f"/api/v1/hooks/hooked/{KEY}?x=1", f"/api/v1/executions/webhook/ns/hooked/{KEY}",
                 f"/api/v1/main/executions/webhook/ns/hooked/{KEY}"):
        logged = mask(make_mocked_request("POST", path))
        assert KEY not in logged and "/hooked/***" in logged, logged
        assert KEY not in redaction.redact(f"POST {path} failed: path={path!r}")
    assert redaction.redact("GET /api/v1/executions/42") == "GET /api/v1/executions/42"
