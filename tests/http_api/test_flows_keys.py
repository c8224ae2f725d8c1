"""Flows, keys and node types through the API."""

from __future__ import annotations

from tests.conftest import Api
from tests.support import FlowBuilder


async def test_flow_get_shows_definition_revision_and_run_defaults(api: Api) -> None:
    flow = await api.json("GET", "/api/v1/flows/caption-image", 200)
    assert flow["revision"] == 1
    assert flow["defaults"] == {"start_node_id": "SYnn-start", "end_node_id": "y5iI-end", "result_node_id": "y5iI-end"}
    assert [n["id"] for n in flow["definition"]["nodes"]] == ["SYnn-start", "prompt", "y5iI-end"]
    assert flow["definition"]["edges"][0]["from"] == "SYnn-start"
    selection = await api.json("GET", "/api/v1/flows/two-starts-two-ends", 200)
    assert selection["defaults"] == {"start_node_id": None, "end_node_id": None, "result_node_id": None}


async def test_put_then_delete_a_flow(api: Api) -> None:
    definition = FlowBuilder("tmp").node("s", "start").node("e", "end").edge("s", "e").build()
    created = await api.put_flow(definition)
    assert created["revision"] == 1 and created["id"] == "tmp"
    task = await api.execute("tmp", params={"wait": "10"})
    assert task["status"] == 3
    deleted = await api.request("DELETE", "/api/v1/flows/tmp")
    assert deleted.status == 204
    assert (await api.request("GET", "/api/v1/flows/tmp")).status == 404
    assert (await api.request("POST", "/api/v1/flow/tmp/execute", json={})).status == 404
    assert (await api.task(task["id"]))["status"] == 3, "a deleted flow's tasks stay readable"
    assert (await api.put_flow(definition))["revision"] == 2


async def test_flow_put_with_a_mismatched_id_is_422(api: Api) -> None:
    body = await api.json("PUT", "/api/v1/flows/a", 422, json={"id": "b", "nodes": [{"id": "s", "type": "start"}]})
    assert body["error"]["field"] == "id"


async def test_keys_are_shown_once_listed_without_secrets_and_revocable(api: Api) -> None:
    created = await api.json("POST", "/api/v1/keys", 201, json={"name": "ci", "scope": "execute"})
    assert created["scope"] == "execute" and created["key"] and created["revoked"] is False
    listed = (await api.json("GET", "/api/v1/keys", 200))["keys"]
    ci = next(k for k in listed if k["id"] == created["id"])
    assert "key" not in ci and "secret_hash" not in ci and ci["name"] == "ci"
    assert all(created["key"] not in str(k) for k in listed)
    await api.request("GET", "/api/v1/flows", token=created["key"])
    after_use = next(k for k in (await api.json("GET", "/api/v1/keys", 200))["keys"] if k["id"] == created["id"])
    assert after_use["last_used"] is not None
    revoked = await api.json("DELETE", f"/api/v1/keys/{created['id']}", 200)
    assert revoked["revoked"] is True
    assert (await api.request("DELETE", "/api/v1/keys/knope")).status == 404


async def test_key_body_is_validated(api: Api) -> None:
    body = await api.json("POST", "/api/v1/keys", 422, json={"name": "x", "scope": "root"})
    assert body["error"]["field"] == "scope"
    body = await api.json("POST", "/api/v1/keys", 422, json={"nme": "x"})
    assert body["error"]["field"] in ("nme", "name")


async def test_node_types_have_schemas_and_costs(api: Api) -> None:
    types = {t["type"]: t for t in (await api.json("GET", "/api/v1/node-types", 200))["node_types"]}
    core = {"start", "end", "constant", "template", "delay", "guard", "pick", "merge", "http_request"}
    assert core <= set(types)
    delay = types["delay"]
    assert delay["params_schema"]["properties"]["seconds"]["maximum"] == 3600
    assert delay["description"] and "cost" in delay and "output_schema" in delay
    assert types["http_request"]["cost"]["per_run"] > 0
