"""image.* through the real server: upload, a resize → watermark flow, download; and node types
whose extra is missing (listed unavailable, refused at flow load naming the extra)."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest_asyncio
from PIL import Image
from pydantic import BaseModel

from http_api import auth
from http_api.app import create_app
from http_api.body import SERVICES
from http_api.settings import Settings
from nodes.contract import NodeType, RunContext
from tests.conftest import Api
from tests.support import FlowBuilder, registry_with_test_types


class NeedsMissingExtra(NodeType):
    """A node type whose extra's module does not exist."""

    type = "test.needs_gpu"
    description = "Stands for a type whose optional dependency is not installed."
    extra = "gpu"
    requires = ("graph_runtime_no_such_module_for_tests",)

    class Params(BaseModel):
        pass

    class Output(BaseModel):
        pass

    async def run(self, params: Any, ctx: RunContext) -> Any:
        raise AssertionError("never runs: refused at flow load")


@pytest_asyncio.fixture
async def extra_api(aiohttp_client: Any, settings: Settings) -> AsyncIterator[Api]:
    registry = registry_with_test_types()
    registry.register(NeedsMissingExtra)
    client = await aiohttp_client(create_app(settings, registry=registry))
    _, token = await auth.issue_key(client.server.app[SERVICES].repo, "test-admin", "admin")
    yield Api(client, token)


def photo() -> bytes:
    image = Image.linear_gradient("L").resize((1200, 800)).convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


async def upload(api: Api, data: bytes, name: str, content_type: str) -> dict[str, Any]:
    form = aiohttp.FormData()
    form.add_field("file", data, filename=name, content_type=content_type)
    return (await api.json("POST", "/api/v1/files", 201, data=form))["file"]


async def test_resize_then_watermark_end_to_end(api: Api) -> None:
    flow = (FlowBuilder("thumb")
            .node("in", "start")
            .node("resize", "image.resize", width=300, height=300, fit="cover", format="png")
            .node("mark", "image.watermark", text="ACME", position="bottom-right", opacity=0.8)
            .node("out", "end")
            .edge("in", "resize", output="photo", input="image")
            .edge("resize", "mark", output="image", input="image")
            .edge("mark", "out", output="image", input="image")
            .edge("resize", "out", output="width", input="width")
            .build())
    await api.put_flow(flow)
    file = await upload(api, photo(), "photo.jpg", "image/jpeg")
    task = await api.execute("thumb", {"node_settings": {"in": {"data": {"photo": {"$file": file["$file"]}}}}})
    done = await api.wait_for_status(task["id"], "succeeded", "failed")
    assert done["status_name"] == "succeeded", done["error"]
    result = done["result"]
    assert result["width"] == 300
    assert result["image"]["name"] == "photo.png" and result["image"]["content_type"] == "image/png"
    assert done["file_result_link"] == result["image"]["url"]
    # megapixels priced: 0.96 MP resized, 0.09 MP watermarked, 0.0001 credits each
    assert done["nodes"]["resize"]["cost"] == 0.000096
    assert done["execution_cost"] > 0.000096

    response = await api.client.get(done["file_result_link"])  # the signed link needs no key
    assert response.status == 200 and response.headers["Content-Type"] == "image/png"
    with Image.open(io.BytesIO(await response.read())) as image:
        assert image.size == (300, 300) and image.format == "PNG"


async def test_bad_image_fails_the_node_with_invalid_input(api: Api) -> None:
    await api.put_flow(FlowBuilder("info").node("in", "start").node("info", "image.info").node("out", "end")
                       .edge("in", "info", output="image", input="image").edge("info", "out").build())
    file = await upload(api, b"GIF89a but not really", "x.gif", "image/gif")
    task = await api.execute("info", {"node_settings": {"in": {"data": {"image": {"$file": file["$file"]}}}}})
    done = await api.wait_for_status(task["id"], "succeeded", "failed")
    assert done["error"]["code"] == "invalid_input" and done["error"]["node_id"] == "info"
    assert done["nodes"]["info"]["attempts"] == 1  # not retried: the same bytes would fail again


async def test_node_types_say_whether_their_extra_is_installed(extra_api: Api) -> None:
    types = {t["type"]: t for t in (await extra_api.json("GET", "/api/v1/node-types", 200))["node_types"]}
    assert types["test.needs_gpu"]["available"] is False and types["test.needs_gpu"]["extra"] == "gpu"
    assert types["image.resize"]["available"] is True and types["image.resize"]["extra"] == "media"
    assert types["media.transcode"]["available"] is True
    assert types["start"]["available"] is True and types["start"]["extra"] is None
    assert types["image.resize"]["cost"]["per_unit"] == {"megapixels": 0.0001}


async def test_a_flow_using_an_unavailable_type_is_refused_naming_the_extra(extra_api: Api) -> None:
    flow = FlowBuilder("gpu").node("in", "start").node("g", "test.needs_gpu").edge("in", "g").build()
    error = (await extra_api.json("PUT", "/api/v1/flows/gpu", 422, json=flow))["error"]
    assert "node type test.needs_gpu needs the gpu extra: pip install 'graph-runtime[gpu]'" in error["message"]
    await extra_api.json("GET", "/api/v1/flows/gpu", 404)
