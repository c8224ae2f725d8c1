"""Every error a user can cause: its status, the error shape, and that nothing was written."""

from __future__ import annotations

import contextlib
import io
import sqlite3
from typing import Any

import aiohttp
import pytest

from tests.conftest import Api, basic

EXECUTE = "/api/v1/flow/caption-image/execute"


async def assert_error(response: Any, status: int, code: str | None, field: str | None = None) -> dict[str, Any]:
    body = await response.json()
    assert response.status == status, body
    assert set(body) == {"error"} and {"code", "message", "field"} <= set(body["error"]), body
    assert code is None or body["error"]["code"] == code, body
    assert body["error"]["message"]
    if field is not None:
        assert body["error"]["field"] == field, body
    return body["error"]


async def no_task_written(api: Api) -> None:
    assert await api.services.repo.count_tasks() == 0


@pytest.mark.parametrize("headers", [
    {},
    {"Authorization": "Basic not-base64!!"},
    {"Authorization": f"Basic {basic('kunknown', 'x' * 43)}"},
    {"Authorization": "Digest abc"},
    {"execution-key": basic("kunknown", "y" * 43)},
])
async def test_missing_or_unknown_key_is_401_with_a_challenge(api: Api, headers: dict[str, str]) -> None:
    response = await api.client.post(EXECUTE, json={}, headers=headers)
    await assert_error(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"] == 'Basic realm="graph-runtime"'
    await no_task_written(api)


async def test_every_accepted_key_form_works(api: Api) -> None:
    key_id, secret = __import__("base64").b64decode(api.token).decode().split(":", 1)
    forms = [
        {"headers": {"Authorization": f"Basic {api.token}"}},
        {"headers": {"Authorization": f"Bearer {api.token}"}},
        {"headers": {"execution-key": api.token}},
        {"params": {"execution-key": api.token}},
        {"headers": {"Authorization": aiohttp.encode_basic_auth(key_id, secret)}},  # what curl -u sends
    ]
    for form in forms:
        response = await api.client.get("/api/v1/flows", **form)
        assert response.status == 200, form


async def test_wrong_secret_for_a_real_key_id_is_401(api: Api) -> None:
    key_id = __import__("base64").b64decode(api.token).decode().split(":", 1)[0]
    response = await api.client.get("/api/v1/flows", headers={"Authorization": f"Basic {basic(key_id, 'wrong')}"})
    await assert_error(response, 401, "unauthorized")


async def test_revoked_key_stops_working_at_once(api: Api) -> None:
    created = await api.json("POST", "/api/v1/keys", 201, json={"name": "ci", "scope": "execute"})
    assert (await api.client.get("/api/v1/flows", headers=api.headers(created["key"]))).status == 200
    await api.json("DELETE", f"/api/v1/keys/{created['id']}", 200)
    await assert_error(await api.client.get("/api/v1/flows", headers=api.headers(created["key"])), 401, "unauthorized")


async def test_execute_scope_cannot_manage_flows_or_keys(api: Api) -> None:
    token = await api.new_key("execute")
    await assert_error(await api.request("POST", "/api/v1/keys", token=token, json={"name": "x"}), 403, "forbidden")
    await assert_error(await api.request("PUT", "/api/v1/flows/x", token=token, json={}), 403, "forbidden")
    await assert_error(await api.request("DELETE", "/api/v1/flows/caption-image", token=token), 403, "forbidden")
    assert (await api.request("POST", EXECUTE, token=token, json={})).status == 201


@pytest.mark.parametrize(("body", "field"), [
    ({"node_setting": {}}, "node_setting"),
    ({"node_id": "x"}, "node_id"),
    ({"start_node_id": "nope"}, "start_node_id"),
    ({"end_node_id": "prompt", "result_node_id": "y5iI-end"}, "result_node_id"),
    ({"start_node_id": "y5iI-end", "end_node_id": "prompt"}, "start_node_id"),
    ({"node_settings": {"ghost": {}}}, "node_settings.ghost"),
    ({"node_settings": {"prompt": "text"}}, "node_settings.prompt"),
    ({"node_settings": {"prompt": {"template": 5}}}, "node_settings.prompt.template"),
    ({"node_settings": {"prompt": {"timeout_s": -1}}}, "node_settings.prompt.timeout_s"),
    ({"node_settings": []}, "node_settings"),
    ({"timeout_s": 0}, "timeout_s"),
    ({"start_node_id": "prompt"}, "node_settings.prompt.image_url"),
])
async def test_requests_that_make_no_sense_are_422_naming_the_field(api: Api, body: dict[str, Any], field: str) -> None:
    response = await api.request("POST", EXECUTE, json=body)
    error = (await response.json())["error"]
    assert response.status == 422 and error["field"] == field, error
    await no_task_written(api)


async def test_delay_with_negative_seconds_is_422_before_anything_is_queued(api: Api) -> None:
    await api.put_flow({"id": "d", "nodes": [{"id": "p1", "type": "delay", "settings": {"seconds": 1}}]})
    body = {"start_node_id": "p1", "end_node_id": "p1", "node_settings": {"p1": {"seconds": -1}}}
    error = await assert_error(await api.request("POST", "/api/v1/flow/d/execute", json=body), 422, "invalid_settings",
                               "node_settings.p1.seconds")
    assert "p1" in error["message"]
    await no_task_written(api)


async def test_missing_inputs_are_listed(api: Api) -> None:
    body = {"start_node_id": "prompt", "end_node_id": "y5iI-end"}
    error = await assert_error(await api.request("POST", EXECUTE, json=body), 422, "missing_inputs")
    for expected in ("prompt.image_url", "prompt.style", "y5iI-end.request"):
        assert expected in error["message"]
    assert {"node_id": "prompt", "input": "style", "from": "SYnn-start"} in error["missing"]


async def test_two_starts_and_no_default_asks_for_the_start(api: Api) -> None:
    error = await assert_error(await api.request("POST", "/api/v1/flow/two-starts-two-ends/execute", json={}),
                               422, "invalid_selection", "start_node_id")
    assert "text-start" in error["message"]


@pytest.mark.parametrize(("params", "field"), [({"wait": "61"}, "wait"), ({"wait": "x"}, "wait"),
                                               ({"revision": "abc"}, "revision")])
async def test_bad_query_values_are_422(api: Api, params: dict[str, str], field: str) -> None:
    await assert_error(await api.request("POST", EXECUTE, json={}, params=params), 422, "invalid_request", field)
    await no_task_written(api)


async def test_unknown_flow_task_and_revision_are_404(api: Api) -> None:
    await assert_error(await api.request("POST", "/api/v1/flow/nope/execute", json={}), 404, "flow_not_found")
    await assert_error(await api.request("POST", EXECUTE, json={}, params={"revision": "99"}), 404, "revision_not_found")
    await assert_error(await api.request("GET", "/api/v1/task/999999"), 404, "task_not_found")
    await assert_error(await api.request("GET", "/api/v1/task/abc"), 404, "task_not_found")
    await assert_error(await api.request("POST", "/api/v1/task/abc/cancel"), 404, "task_not_found")
    await assert_error(await api.request("GET", "/api/v1/nowhere"), 404, "not_found")
    await no_task_written(api)


@pytest.mark.parametrize(("data", "ctype", "status", "code"), [
    (b"{not json", "application/json", 400, "invalid_json"),
    (b"[1, 2]", "application/json", 400, "body_not_object"),
    (b"\"text\"", "application/json", 400, "body_not_object"),
    (b"a=1", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
])
async def test_bodies_that_are_not_json_objects(api: Api, data: bytes, ctype: str, status: int, code: str) -> None:
    response = await api.request("POST", EXECUTE, data=data, headers={"Content-Type": ctype})
    await assert_error(response, status, code)
    await no_task_written(api)


async def test_json_sent_with_curls_default_content_type_is_accepted(api: Api) -> None:
    response = await api.request("POST", EXECUTE, data=b'{"node_settings": {}}',
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status == 201


async def test_body_over_the_limit_is_413(api: Api) -> None:
    big = b'{"init_context": {"blob": "' + b"x" * (1024 * 1024 + 10) + b'"}}'
    response = await api.request("POST", EXECUTE, data=io.BytesIO(big), headers={"Content-Type": "application/json"})
    await assert_error(response, 413, "body_too_large")
    await no_task_written(api)


async def test_flow_put_with_problems_lists_them_all_and_writes_nothing(api: Api) -> None:
    bad = {"nodes": [{"id": "a", "type": "nope"}, {"id": "a", "type": "end"}], "edges": [{"from": "a", "to": "zz"}]}
    error = await assert_error(await api.request("PUT", "/api/v1/flows/broken", json=bad), 422, "flow_invalid")
    assert len(error["problems"]) == 3
    await assert_error(await api.request("GET", "/api/v1/flows/broken"), 404, "flow_not_found")


async def test_cors_preflight_is_answered_without_a_key(api: Api) -> None:
    response = await api.client.options(EXECUTE, headers={
        "Origin": "https://tool.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type"})
    assert response.status == 200
    assert response.headers["Access-Control-Allow-Origin"] in ("*", "https://tool.example")


async def test_healthz_needs_no_key(api: Api) -> None:
    response = await api.client.get("/healthz")
    assert response.status == 200 and (await response.json())["status"] == "ok"


async def test_healthz_is_503_while_the_schema_is_not_this_codes(api: Api, db_url: str) -> None:
    # What a newer release upgrading the shared database while this process runs looks like.
    path = db_url.split("///", 1)[1]
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        [(ours,)] = conn.execute("SELECT version_num FROM alembic_version").fetchall()
        conn.execute("UPDATE alembic_version SET version_num = '9999'")
    response = await api.client.get("/healthz")
    body = await response.json()
    assert response.status == 503 and body["error"]["code"] == "schema_not_current"
    assert "9999" in body["error"]["message"] and ours in body["error"]["message"]
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("UPDATE alembic_version SET version_num = ?", (ours,))
    assert (await api.client.get("/healthz")).status == 200
