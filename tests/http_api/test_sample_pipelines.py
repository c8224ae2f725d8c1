"""The sample pipelines end to end: real images and media made here, a real server, real files.

``product-photo-sizes`` needs no model. ``caption-and-watermark`` and ``video-to-summary`` call
an OpenAI-compatible API: here the stand-in of ``tests/openai_standin.py`` on loopback, reached
through the flows' ``base_url`` overridden by the request (as a user points them at vLLM or
Ollama), with the key from the secret ``OPENAI_API_KEY`` the flows name.
"""

from __future__ import annotations

import io
from typing import Any

import aiohttp
from PIL import Image

from tests.conftest import Api

START = "start"


def photo(width: int = 1600, height: int = 1000, fmt: str = "JPEG") -> bytes:
    """A real photo-like image: a gradient with a shape, so encoders have something to encode."""
    image = Image.new("RGB", (width, height))
    image.putdata([(x * 255 // width, y * 255 // height, 128) for y in range(height) for x in range(width)])
    out = io.BytesIO()
    image.save(out, fmt, quality=90)
    return out.getvalue()


async def upload(api: Api, data: bytes, name: str, content_type: str) -> dict[str, Any]:
    form = aiohttp.FormData()
    form.add_field("file", data, filename=name, content_type=content_type)
    return (await api.json("POST", "/api/v1/files", 201, data=form))["file"]


async def download(api: Api, url: str) -> bytes:
    response = await api.client.get(url)  # a signed url: no key
    assert response.status == 200, await response.text()
    return await response.read()


def opened(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


# --- product-photo-sizes ------------------------------------------------------------------------


async def test_product_photo_sizes_makes_three_sizes_in_parallel(api: Api) -> None:
    uploaded = await upload(api, photo(), "shoe.jpg", "image/jpeg")
    body = {"node_settings": {START: {"data": {"photo": {"$file": uploaded["$file"]}}}}}

    task = await api.execute("product-photo-sizes", body, params={"wait": "30"})

    assert task["status_name"] == "succeeded", task["error"]
    result = task["result"]
    expected = {"thumbnail": ((150, 150), "JPEG"), "medium": ((600, 375), "WEBP"), "large": ((1200, 750), "JPEG")}
    for name, (size, fmt) in expected.items():
        assert (result[name]["width"], result[name]["height"]) == size
        image = opened(await download(api, result[name]["image"]["url"]))
        assert image.size == size and image.format == fmt, name
    assert task["file_result_link"] is not None
    branches = [task["nodes"][name] for name in expected]
    assert max(b["started"] for b in branches) < min(b["finished"] for b in branches), "resizes ran one by one"


async def test_product_photo_sizes_in_one_multipart_request(api: Api) -> None:
    form = aiohttp.FormData()
    form.add_field(f"node_settings.{START}.data.photo", photo(800, 800, "PNG"), filename="shoe.png",
                   content_type="image/png")

    task = await api.json("POST", "/api/v1/flow/product-photo-sizes/execute", 201, data=form, params={"wait": "30"})

    assert task["status_name"] == "succeeded", task["error"]
    assert [(task["result"][n]["width"], task["result"][n]["height"]) for n in ("thumbnail", "medium", "large")] \
        == [(150, 150), (600, 600), (1200, 1200)]


async def test_product_photo_sizes_refuses_a_file_that_is_not_an_image(api: Api) -> None:
    uploaded = await upload(api, b"%PDF-1.4 not an image", "shoe.jpg", "image/jpeg")
    body = {"node_settings": {START: {"data": {"photo": {"$file": uploaded["$file"]}}}}}

    task = await api.execute("product-photo-sizes", body, params={"wait": "30"})

    assert task["status_name"] == "failed" and task["error"]["code"] == "invalid_input"
