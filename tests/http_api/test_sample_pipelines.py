"""The sample pipelines end to end: real images and media made here, a real server, real files.

``product-photo-sizes`` needs no model. ``caption-and-watermark`` and ``video-to-summary`` call
an OpenAI-compatible API: here the stand-in of ``tests/openai_standin.py`` on loopback, reached
through the flows' ``base_url`` overridden by the request (as a user points them at vLLM or
Ollama), with the key from the secret ``OPENAI_API_KEY`` the flows name.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import imageio_ffmpeg
import pytest_asyncio
from PIL import Image

from tests import openai_standin
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


# --- the model pipelines, against the OpenAI-compatible stand-in -------------------------------

CAPTION = "A gradient with a purple glow"
SECRET_VALUE = "sk-sample-pipelines-0123456789"


@pytest_asyncio.fixture
async def standin(aiohttp_server: Any) -> Any:
    return await aiohttp_server(openai_standin.make_app())


async def with_key(api: Api) -> None:
    response = await api.request("PUT", "/api/v1/secrets/OPENAI_API_KEY", json={"value": SECRET_VALUE})
    assert response.status == 204, await response.text()


def at(standin: Any, *node_ids: str) -> dict[str, Any]:
    """node_settings pointing these model nodes at the stand-in, as a user points them at vLLM or Ollama."""
    return {node_id: {"base_url": str(standin.make_url("/v1"))} for node_id in node_ids}


def video(path: Path, seconds: float = 2.0) -> bytes:
    """A real MP4: a test pattern with a 440 Hz tone, encoded by the FFmpeg the media extra installs."""
    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i",
               f"testsrc=size=160x120:rate=10:duration={seconds}", "-f", "lavfi", "-i",
               f"sine=frequency=440:duration={seconds}", "-c:v", "mpeg4", "-c:a", "aac", "-shortest", "-y", str(path)]
    subprocess.run(command, check=True, capture_output=True, timeout=30)
    return path.read_bytes()


async def test_caption_and_watermark_captions_the_image_and_draws_the_caption(api: Api, standin: Any) -> None:
    await with_key(api)
    standin.app[openai_standin.STANDIN].chat_text = CAPTION
    original = photo(640, 400)
    uploaded = await upload(api, original, "cat.jpg", "image/jpeg")
    body = {"node_settings": {START: {"data": {"image": {"$file": uploaded["$file"]}}}, **at(standin, "caption")}}

    task = await api.execute("caption-and-watermark", body, params={"wait": "30"})

    assert task["status_name"] == "succeeded", task["error"]
    assert task["result"]["caption"] == CAPTION
    marked = await download(api, task["file_result_link"])
    assert task["result"]["image"]["$file"] != uploaded["$file"] and marked != original
    assert opened(marked).size == (640, 400)
    [call] = standin.app[openai_standin.STANDIN].requests
    assert call.path == "/v1/chat/completions" and call.headers["Authorization"] == f"Bearer {SECRET_VALUE}"
    [image_part] = [p for p in call.json["messages"][-1]["content"] if p["type"] == "image_url"]
    sent = f"[image image/jpeg;base64 {len(original)} bytes sha256:{hashlib.sha256(original).hexdigest()[:12]}]"
    assert openai_standin.describe_part(image_part) == sent  # the uploaded bytes, inline as a data URL
    assert SECRET_VALUE not in json.dumps(task)


async def test_video_to_summary_extracts_transcribes_and_summarises(api: Api, standin: Any, tmp_path: Path) -> None:
    await with_key(api)
    uploaded = await upload(api, video(tmp_path / "talk.mp4"), "talk.mp4", "video/mp4")
    body = {"node_settings": {START: {"data": {"video": {"$file": uploaded["$file"]}}},
                              **at(standin, "transcript", "summary")}}

    task = await api.execute("video-to-summary", body, params={"wait": "60"})

    assert task["status_name"] == "succeeded", task["error"]
    transcribe, chat = standin.app[openai_standin.STANDIN].requests
    filename, _, audio = transcribe.form["file"]
    assert transcribe.path == "/v1/audio/transcriptions" and transcribe.form["model"] == "whisper-1"
    assert audio[:3] == b"ID3" or audio[0] == 0xFF, "the audio sent is not MP3"
    result = task["result"]
    assert result["transcript"] == f"heard {len(audio)} bytes of {filename} in auto"
    assert abs(result["duration_s"] - 2.0) < 0.2
    assert chat.json["messages"][-1] == {"role": "user", "content": result["transcript"]}
    assert result["summary"].endswith(f"user: {result['transcript']}")  # the stand-in echoes what it was sent


async def test_the_model_pipelines_need_the_key_secret(api: Api) -> None:
    uploaded = await upload(api, photo(64, 64), "cat.jpg", "image/jpeg")
    body = {"node_settings": {START: {"data": {"image": {"$file": uploaded["$file"]}}}}}

    error = (await api.execute("caption-and-watermark", body, status=422))["error"]

    assert error["code"] == "secret_unknown" and "OPENAI_API_KEY" in error["message"]


# --- caption-image: the prompt alone by default, the model's caption at caption-end ---------------


async def test_caption_image_ends_at_the_prompt_by_default_and_calls_the_model_at_caption_end(
        api: Api, standin: Any) -> None:
    data = {"image_url": "https://example.com/dog.jpg", "style": "long"}
    prompt_only = await api.execute("caption-image", {"node_settings": {"SYnn-start": {"data": data}}},
                                    params={"wait": "30"})
    assert prompt_only["status_name"] == "succeeded" and "caption" not in prompt_only["nodes"], "no key, no model"

    await with_key(api)
    standin.app[openai_standin.STANDIN].chat_text = CAPTION
    model = at(standin, "caption")
    model["caption"]["prices"] = {"input": 0.15, "output": 0.6}  # credits per 1M tokens
    body = {"end_node_id": "caption-end", "node_settings": {"SYnn-start": {"data": data}, **model}}
    task = await api.execute("caption-image", body, params={"wait": "30"})

    assert task["status_name"] == "succeeded", task["error"]
    assert task["result"]["caption"] == CAPTION and task["result"]["usage"]["total_tokens"] > 0
    [call] = standin.app[openai_standin.STANDIN].requests
    content = call.json["messages"][-1]["content"]
    assert {"type": "text", "text": "Describe the image at https://example.com/dog.jpg in a long sentence."} in content
    assert {"type": "image_url", "image_url": {"url": "https://example.com/dog.jpg"}} in [
        {"type": p["type"], "image_url": {"url": p["image_url"]["url"]}} for p in content if p["type"] == "image_url"]
    usage = task["result"]["usage"]
    expected = (usage["prompt_tokens"] * 0.15 + usage["completion_tokens"] * 0.6) / 1e6
    assert abs(task["execution_cost"] - expected) < 1e-9 and expected > 0, "the tokens are priced"


# --- product-photo-batch -------------------------------------------------------------------------


async def test_product_photo_batch_makes_a_thumbnail_of_every_photo_in_order(api: Api) -> None:
    sizes = [(1600, 1000), (800, 1200), (640, 480), (1000, 1000), (300, 900)]
    photos = [await upload(api, photo(w, h), f"p{i}.jpg", "image/jpeg") for i, (w, h) in enumerate(sizes)]
    broken = await upload(api, b"not an image", "broken.jpg", "image/jpeg")
    items = [{"$file": p["$file"]} for p in photos[:2]] + [{"$file": broken["$file"]}] + \
            [{"$file": p["$file"]} for p in photos[2:]]
    body = {"node_settings": {START: {"data": {"photos": items}}}}

    task = await api.execute("product-photo-batch", body, params={"wait": "60"})

    assert task["status_name"] == "succeeded", task["error"]  # on_error: collect
    thumbnails = task["result"]["thumbnails"]
    assert len(thumbnails) == 6 and set(thumbnails[2]) == {"error"}
    made = [t for i, t in enumerate(thumbnails) if i != 2]
    assert len(made) == len(photos)
    for thumb in made:
        assert (thumb["width"], thumb["height"]) == (300, 300)
        image = opened(await download(api, thumb["image"]["url"]))
        assert image.size == (300, 300) and image.format == "JPEG"
    assert task["nodes"]["thumbnails"]["items"] == {"total": 6, "succeeded": 5, "failed": 1, "running": 0}
