"""A stand-in for an OpenAI-compatible API, on loopback, speaking the real wire protocol.

Endpoints (under ``/v1``): ``/chat/completions`` (image content parts accepted and described
deterministically in the answer; with ``stream: true`` the answer comes as OpenAI streams it:
``data: {chat.completion.chunk}`` events, one per word, a last chunk with ``usage`` when
``stream_options.include_usage`` asks, then ``data: [DONE]``; ``streams = False`` plays a server
that ignores the flag and answers JSON), ``/audio/transcriptions`` (multipart, verbose
JSON), ``/embeddings``, ``/images/generations`` (``b64_json`` or ``url`` answers). Every request
is recorded; ``fail_next`` makes the next N requests answer a status (429 with ``Retry-After``
by default) first. Answers are pure functions of the request, so tests can state them exactly.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import struct
import time
import zlib
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from nodes import codec

STANDIN = web.AppKey("standin", "StandIn")
RECORDED = web.RequestKey("recorded", "Recorded")


@dataclass
class Recorded:
    """One request the stand-in received."""

    path: str
    headers: dict[str, str]
    json: Any = None
    form: dict[str, Any] = field(default_factory=dict)  # text fields; files as (filename, content_type, bytes)
    at: float = 0.0


@dataclass
class StandIn:
    """The stand-in's state: what it received, and the failures it is told to answer first."""

    requests: list[Recorded] = field(default_factory=list)
    failures: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    handler_s: list[float] = field(default_factory=list)  # time spent inside handlers, per request
    image_answer: str = "b64_json"  # or "url"
    chat_text: str | None = None  # overrides the deterministic chat answer
    streams: bool = True  # False: ignore "stream": true and answer one JSON body, as some servers do
    stream_gate: asyncio.Event | None = None  # set: a stream waits for it after its first piece
    base_url: str = ""

    def fail_next(self, times: int, status: int = 429, retry_after: str | None = "1") -> None:
        """Answer the next ``times`` requests with ``status`` (and ``Retry-After`` unless None)."""
        headers = {} if retry_after is None else {"Retry-After": retry_after}
        self.failures.extend([(status, headers)] * times)


def tiny_png(width: int = 2, height: int = 1, seed: int = 0) -> bytes:
    """A valid RGB PNG whose pixels depend on ``seed`` (no Pillow needed)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = b"".join(b"\x00" + bytes((seed + x) % 256 for x in range(width * 3)) for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def describe_part(part: dict[str, Any]) -> str:
    """How the stand-in echoes one content part (deterministic, so tests can state it)."""
    if part.get("type") == "text":
        return str(part["text"])
    url = part["image_url"]["url"]
    if url.startswith("data:"):
        head, _, data = url.partition(",")
        raw = base64.b64decode(data)
        return f"[image {head[5:]} {len(raw)} bytes sha256:{hashlib.sha256(raw).hexdigest()[:12]}]"
    return f"[image url {url}]"


def words(text: str) -> int:
    return len(text.split())


def _chat_answer(body: dict[str, Any], standin: StandIn) -> dict[str, Any]:
    said = []
    for message in body["messages"]:
        content = message.get("content")
        if isinstance(content, list):
            content = " ".join(describe_part(p) for p in content)
        said.append(f"{message['role']}: {content}")
    text = standin.chat_text if standin.chat_text is not None else " | ".join(said)
    fmt = (body.get("response_format") or {}).get("type")
    if fmt in ("json_object", "json_schema") and standin.chat_text is None:
        text = codec.dumps_str({"echo": said, "format": fmt})
    prompt_tokens = sum(words(s) for s in said)
    completion_tokens = words(text)
    return {
        "id": "chatcmpl-standin", "object": "chat.completion", "created": 1700000000,
        "model": f"{body['model']}-2024-01-01",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


def _vector(text: str) -> list[float]:
    digest = hashlib.sha256(text.encode()).digest()
    return [round(b / 255, 6) for b in digest[:4]]


async def _read(request: web.Request, standin: StandIn) -> Recorded:
    recorded = Recorded(request.path, dict(request.headers), at=time.monotonic())
    if request.content_type == "multipart/form-data":
        async for part in await request.multipart():
            data = await part.read()  # type: ignore[union-attr]
            if part.filename:  # type: ignore[union-attr]
                recorded.form[part.name] = (part.filename, part.headers.get("Content-Type"), bytes(data))  # type: ignore[union-attr]
            else:
                recorded.form[part.name] = data.decode()  # type: ignore[union-attr]
    elif request.can_read_body:
        recorded.json = codec.loads(await request.read())
    standin.requests.append(recorded)
    return recorded


@web.middleware
async def _standin_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    standin = request.app[STANDIN]
    started = time.perf_counter()
    try:
        if request.path.startswith("/files/"):
            return await handler(request)
        recorded = await _read(request, standin)
        if standin.failures:
            status, headers = standin.failures.pop(0)
            return web.json_response({"error": {"message": f"stand-in says {status}", "type": "rate_limit"}},
                                     status=status, headers=headers)
        request[RECORDED] = recorded
        return await handler(request)
    finally:
        standin.handler_s.append(time.perf_counter() - started)


async def _chat(request: web.Request) -> web.StreamResponse:
    body = request[RECORDED].json
    if not body.get("model") or not body.get("messages"):
        return web.json_response({"error": {"message": "model and messages are required"}}, status=400)
    standin = request.app[STANDIN]
    answer = _chat_answer(body, standin)
    if body.get("stream") and standin.streams:
        return await _stream_chat(request, answer, bool((body.get("stream_options") or {}).get("include_usage")))
    return web.json_response(answer)


def pieces(text: str) -> list[str]:
    """How the stand-in cuts an answer into streamed deltas: each word with the space before it."""
    return re.findall(r"\s*\S+", text) or [text]


async def _stream_chat(request: web.Request, answer: dict[str, Any], include_usage: bool) -> web.StreamResponse:
    standin = request.app[STANDIN]
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    head = {key: answer[key] for key in ("id", "created", "model")} | {"object": "chat.completion.chunk"}
    [choice] = answer["choices"]

    async def send(data: Any) -> None:
        await response.write(b"data: " + codec.dumps(data) + b"\n\n")

    await send(head | {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]})
    for i, piece in enumerate(pieces(choice["message"]["content"])):
        await send(head | {"choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]})
        if i == 0 and standin.stream_gate is not None:
            await standin.stream_gate.wait()
    await send(head | {"choices": [{"index": 0, "delta": {}, "finish_reason": choice["finish_reason"]}]})
    if include_usage:
        await send(head | {"choices": [], "usage": answer["usage"]})
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


async def _transcribe(request: web.Request) -> web.Response:
    form = request[RECORDED].form
    name, _, data = form["file"]
    text = f"heard {len(data)} bytes of {name} in {form.get('language', 'auto')}"
    return web.json_response({
        "task": "transcribe", "language": form.get("language", "english"), "duration": 2.5, "text": text,
        "segments": [{"id": 0, "seek": 0, "start": 0.0, "end": 1.25, "text": "heard", "tokens": [1]},
                     {"id": 1, "seek": 0, "start": 1.25, "end": 2.5, "text": text[6:], "tokens": [2]}],
    })


async def _embeddings(request: web.Request) -> web.Response:
    body = request[RECORDED].json
    texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
    data = [{"object": "embedding", "index": i, "embedding": _vector(t)} for i, t in enumerate(texts)]
    tokens = sum(words(t) for t in texts)
    return web.json_response({"object": "list", "data": list(reversed(data)), "model": body["model"],
                              "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})


async def _images(request: web.Request) -> web.Response:
    standin = request.app[STANDIN]
    body = request[RECORDED].json
    items = []
    for i in range(body.get("n", 1)):
        if standin.image_answer == "url":
            items.append({"url": f"{standin.base_url}/files/{i}.png"})
        else:
            items.append({"b64_json": base64.b64encode(tiny_png(seed=i)).decode()})
    return web.json_response({"created": 1700000000, "data": items,
                              "usage": {"input_tokens": words(body["prompt"]), "output_tokens": 100}})


async def _file(request: web.Request) -> web.Response:
    seed = int(request.match_info["seed"])
    return web.Response(body=tiny_png(seed=seed), content_type="image/png")


def make_app() -> web.Application:
    """The stand-in's aiohttp application; its :class:`StandIn` is ``app[STANDIN]``."""
    app = web.Application(middlewares=[_standin_middleware], client_max_size=64 * 1024 * 1024)
    app[STANDIN] = StandIn()
    app.router.add_post("/v1/chat/completions", _chat)
    app.router.add_post("/v1/audio/transcriptions", _transcribe)
    app.router.add_post("/v1/embeddings", _embeddings)
    app.router.add_post("/v1/images/generations", _images)
    app.router.add_get("/files/{seed:\\d+}.png", _file)
    return app


__all__ = ["STANDIN", "Recorded", "StandIn", "describe_part", "make_app", "pieces", "tiny_png"]
