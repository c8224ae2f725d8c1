"""Typed inputs over HTTP: 422s naming node_settings.<start>.data.<path>, nothing queued, GET shows them."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Api

SCHEMA = {
    "type": "object",
    "properties": {"image_url": {"type": "string"}, "style": {"enum": ["short", "long"]}},
    "required": ["image_url"],
    "additionalProperties": False,
}


def flow(**extra: Any) -> dict[str, Any]:
    return {
        "id": "typed",
        "inputs": SCHEMA,
        "nodes": [
            {"id": "s", "type": "start", "settings": {"data": {"image_url": "https://example.com/cat.jpg"}}},
            {"id": "t", "type": "template", "settings": {"template": "{{ image_url }} {{ style }}", "style": "short"}},
            {"id": "e", "type": "end"},
        ],
        "edges": [{"from": "s", "output": "image_url", "to": "t", "input": "image_url"},
                  {"from": "t", "output": "text", "to": "e", "input": "text"}],
        **extra,
    }


async def test_get_shows_inputs_by_start_node(api: Api) -> None:
    await api.put_flow(flow())
    body = await api.json("GET", "/api/v1/flows/typed", 200)
    assert body["inputs"] == {"s": SCHEMA}
    assert body["definition"]["inputs"] == SCHEMA
    await api.put_flow({**flow(), "id": "plain", "inputs": None})
    assert (await api.json("GET", "/api/v1/flows/plain", 200))["inputs"] is None


@pytest.mark.parametrize(("data", "field", "words"), [
    ({"styel": "long"}, "node_settings.s.data.styel", "not an input of this flow (known: image_url, style)"),
    ({"style": "huge"}, "node_settings.s.data.style", "is not one of"),
    ({"image_url": 5}, "node_settings.s.data.image_url", "is not of type 'string'"),
])
async def test_bad_inputs_are_422s_naming_the_field_and_nothing_is_queued(
        api: Api, data: dict[str, Any], field: str, words: str) -> None:
    await api.put_flow(flow())
    body = await api.execute("typed", {"node_settings": {"s": {"data": data}}}, status=422)
    assert body["error"]["field"] == field and body["error"]["code"] == "invalid_settings"
    assert words in body["error"]["message"]
    assert await api.services.repo.count_tasks() == 0


async def test_good_inputs_run(api: Api) -> None:
    await api.put_flow(flow())
    data = {"image_url": "https://example.com/dog.jpg", "style": "long"}
    task = await api.execute("typed", {"node_settings": {"s": {"data": data}}}, params={"wait": "10"})
    assert task["result"] == {"text": "https://example.com/dog.jpg short"}


async def test_a_broken_schema_is_refused_at_put(api: Api) -> None:
    body = await api.put_flow(flow(inputs={"type": "object", "properties": {"n": {"type": "integr"}}}), status=422)
    assert "inputs: not a valid JSON Schema at properties.n.type" in body["error"]["message"]


async def test_put_refuses_unknown_outputs_and_unsupplied_template_variables(api: Api) -> None:
    bad = flow()
    bad["nodes"][1]["settings"] = {"template": "{{ image_url }} {{ mood }}"}
    bad["edges"][1] = {"from": "t", "output": "txt", "to": "e", "input": "text"}
    message = (await api.put_flow(bad, status=422))["error"]["message"]
    assert "edges.1.output: node 't' (template) has no output 'txt' (it produces: text)" in message
    assert "no setting or edge supplies 'mood'" in message


async def test_the_caption_sample_refuses_a_misspelt_input(api: Api) -> None:
    body = {"node_settings": {"SYnn-start": {"data": {"imageurl": "https://example.com/dog.jpg"}}}}
    error = (await api.execute("caption-image", body, status=422))["error"]
    assert error["field"] == "node_settings.SYnn-start.data.imageurl"
    assert error["message"] == ("node 'SYnn-start' input 'imageurl': is not an input of this flow "
                                "(known: image_url, style)")
    shown = (await api.json("GET", "/api/v1/flows/caption-image", 200))["inputs"]
    assert set(shown["SYnn-start"]["properties"]) == {"image_url", "style"}
    assert await api.services.repo.count_tasks() == 0


async def test_plan_gives_the_same_422(api: Api) -> None:
    body = {"node_settings": {"SYnn-start": {"data": {"style": 3}}}}
    planned = await api.json("POST", "/api/v1/flow/caption-image/plan", 422, json=body)
    executed = await api.execute("caption-image", body, status=422)
    assert planned == executed and planned["error"]["field"] == "node_settings.SYnn-start.data.style"
