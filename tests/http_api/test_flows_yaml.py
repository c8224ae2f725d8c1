"""``PUT /api/v1/flows/{id}`` with a YAML body: read as the flows directory reads a file, and bounded."""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import pytest

from graph_runtime import flow as flow_model
from http_api import openapi, yaml_body
from tests.conftest import Api

FLOW_YAML = """\
# a flow as it sits in sample_flows/, ids that look like numbers included
id: 4711
name: Numbers stay text
defaults: {start_node_id: "0123", end_node_id: "1_000", result_node_id: "1_000"}
settings_anchor: &common {data: {greeting: hello, when: 2024-05-01, flag: no}}
nodes:
  - id: 0123
    type: start
    settings: *common
  - id: 1_000
    type: end
edges:
  - {from: 0123, to: 1_000, output: greeting, input: greeting}
"""


async def put_yaml(api: Api, flow_id: str, text: str | bytes, status: int,
                   content_type: str = "application/yaml") -> Any:
    return await api.json("PUT", f"/api/v1/flows/{flow_id}", status, data=text,
                          headers={"Content-Type": content_type})


def _without_anchor(text: str) -> str:
    # `settings_anchor` is not a flow field (a 422 on both paths); the anchor is moved to the node.
    return text.replace("settings_anchor: &common {data: {greeting: hello, when: 2024-05-01, flag: no}}\n", "") \
        .replace("settings: *common", "settings: &common {data: {greeting: hello, when: 2024-05-01, flag: no}}")


async def test_a_yaml_flow_is_stored_as_the_flows_directory_would_store_it(api: Api, tmp_path: Path) -> None:
    text = _without_anchor(FLOW_YAML)
    stored = await put_yaml(api, "4711", text, 201)

    from_file = tmp_path / "4711.yaml"
    from_file.write_text(text, encoding="utf-8")
    assert stored["id"] == "4711" and stored["revision"] == 1
    assert stored["definition"] == flow_model.read_file(from_file).definition()
    start = stored["definition"]["nodes"][0]
    assert start["id"] == "0123" and start["settings"]["data"]["flag"] == "no"  # YAML 1.2: no octal, no "no" → false
    task = await api.execute("4711", params={"wait": "10"})
    assert task["status_name"] == "succeeded" and task["result"] == {"greeting": "hello"}


@pytest.mark.parametrize("content_type", [*yaml_body.YAML_TYPES, "application/yaml; charset=utf-8"])
async def test_every_yaml_media_type_is_read(api: Api, content_type: str) -> None:
    await put_yaml(api, "4711", _without_anchor(FLOW_YAML), 201, content_type)


async def test_the_same_flow_as_json_then_yaml_is_one_revision(api: Api) -> None:
    definition = {"id": "same", "nodes": [{"id": "s", "type": "start"}, {"id": "e", "type": "end"}],
                  "edges": [{"from": "s", "to": "e"}]}
    await api.put_flow(definition)

    again = await put_yaml(api, "same", "nodes: [{id: s, type: start}, {id: e, type: end}]\n"
                                        "edges: [{from: s, to: e}]\n", 200)

    assert again["revision"] == 1


async def test_validation_problems_are_the_same_422_as_for_json(api: Api) -> None:
    body = await put_yaml(api, "bad", "nodes: [{id: s, type: no.such.type}]\n", 422)
    assert "no.such.type" in body["error"]["message"]
    assert (await api.request("GET", "/api/v1/flows/bad")).status == 404


BAD_YAML: dict[str, tuple[str | bytes, str, str | None]] = {
    "syntax": ("nodes: [unclosed\n", "invalid_yaml", None),
    "tab indentation": ("nodes:\n\t- id: s\n", "invalid_yaml", None),
    "two documents": ("id: a\n---\nid: b\n", "invalid_yaml", None),
    "a list": ("- id: s\n", "body_not_object", None),
    "a scalar": ("just text\n", "body_not_object", None),
    "not utf-8": (b"id: caf\xe9\n", "invalid_yaml", None),
    "unknown alias": ("nodes: *nowhere\n", "invalid_yaml", None),
    "python object": ("id: !!python/object/apply:os.system [echo hi]\n", "invalid_yaml", None),
    "binary": ("name: !!binary aGk=\n", "invalid_yaml", "name"),
    "set": ("nodes: [{id: s, type: start, settings: {data: !!set {a: null}}}]\n", "invalid_yaml",
            "nodes.0.settings.data"),
    "a list as a key": ("? [a, b]\n: c\n", "invalid_yaml", None),
    "deep": ("x: " + "[" * 65 + "]" * 65 + "\n", "invalid_yaml", None),
    "recursive alias": ("x: &a [1, *a]\n", "invalid_yaml", None),
}


@pytest.mark.parametrize("case", BAD_YAML, ids=str)
async def test_a_bad_yaml_body_is_a_400_naming_why_and_writes_nothing(api: Api, case: str) -> None:
    text, code, field = BAD_YAML[case]

    body = await put_yaml(api, "bad", text, 400)

    assert body["error"]["code"] == code and body["error"]["field"] == field, body
    assert (await api.request("GET", "/api/v1/flows/bad")).status == 404


async def test_nesting_past_the_json_limit_is_refused_without_recursing(api: Api) -> None:
    deep = "x: " + "[" * 50_000 + "]" * 50_000 + "\n"  # a RecursionError (500) if PyYAML composed it all
    body = await put_yaml(api, "bad", deep, 400)
    assert "deeper than 64" in body["error"]["message"]


async def test_aliases_that_expand_exponentially_are_refused_quickly(api: Api) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, "
              f"*a{i - 1}, *a{i - 1}, *a{i - 1}]" for i in range(1, 10)]  # 10^10 values once expanded
    started = time.monotonic()

    body = await put_yaml(api, "bad", "\n".join(lines) + "\n", 400)

    assert "aliases" in body["error"]["message"] and time.monotonic() - started < 2


async def test_a_yaml_body_over_max_body_bytes_is_413(api: Api) -> None:
    limit = api.services.settings.max_body_bytes
    await put_yaml(api, "big", io.BytesIO(b"name: " + b"x" * limit + b"\n"), 413)  # type: ignore[arg-type]


def test_the_openapi_document_offers_yaml_for_put_flow() -> None:
    content = openapi.document()["paths"]["/api/v1/flows/{flow_id}"]["put"]["requestBody"]["content"]
    assert set(yaml_body.YAML_TYPES) <= set(content)
    assert content["application/yaml"]["schema"] == content["application/json"]["schema"]
