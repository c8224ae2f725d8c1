"""Reading a streamed chat completion (``stream: true``): server-sent chunks, then ``data: [DONE]``.

Each chunk's text delta goes to ``ctx.token`` as it arrives (the task's ``token`` events); the
chunks are folded into the answer a non-streaming call would have returned (text, model, finish
reason, and the usage of the last chunk, which ``stream_options.include_usage`` asks for), so
``llm.chat``'s output and cost are the same either way.

The protocol parser is the Python client's (:mod:`graph_runtime_client.sse`, the WHATWG
algorithm, standard library only): one parser for both ends of our own event streams and this one.
"""

from __future__ import annotations

from typing import Any

import aiohttp

from graph_runtime_client.sse import EventStreamParser
from nodes import codec, errors
from nodes.builtin import http_body
from nodes.contract import RunContext

DONE = "[DONE]"


def is_event_stream(resp: aiohttp.ClientResponse) -> bool:
    """Whether the answer is a stream (a server may ignore ``stream: true`` and answer JSON)."""
    return resp.content_type == "text/event-stream"


async def read(resp: aiohttp.ClientResponse, ctx: RunContext, max_bytes: int, shown_url: str) -> dict[str, Any]:
    """The streamed completion as one ``chat.completion`` answer, each text piece told to ``ctx.token``.

    Raises:
        errors.NodeFailed: a chunk that is not JSON, an error event, or more than ``max_bytes``.
    """
    parser = EventStreamParser()
    folded = _Folded()
    async for piece in http_body.chunks(resp, max_bytes, shown_url):
        for event in parser.feed(piece):
            if event.data.strip() == DONE:
                return folded.answer()
            folded.add(_chunk(event.data, shown_url), ctx)
    # Some servers close without [DONE]; what arrived is the answer (the last chunk said why it stopped).
    return folded.answer()


def _chunk(data: str, shown_url: str) -> dict[str, Any]:
    try:
        chunk = codec.loads(data)
    except codec.DecodeError:
        raise errors.NodeFailed(f"{shown_url} streamed a chunk that is not JSON: {data[:200]}") from None
    if not isinstance(chunk, dict):
        raise errors.NodeFailed(f"{shown_url} streamed a chunk that is not an object: {data[:200]}")
    error = chunk.get("error")
    if error is not None:  # OpenAI and vLLM report a failure mid-stream as an error chunk
        message = error.get("message", error) if isinstance(error, dict) else error
        raise errors.NodeFailed(f"{shown_url} failed while streaming: {str(message)[:300]}")
    return chunk


class _Folded:
    """What the chunks add up to."""

    def __init__(self) -> None:
        self.text: list[str] = []
        self.model: str | None = None
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] | None = None

    def add(self, chunk: dict[str, Any], ctx: RunContext) -> None:
        self.model = chunk.get("model") or self.model
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            text = (choice.get("delta") or {}).get("content")
            if isinstance(text, str) and text:
                self.text.append(text)
                ctx.token(text)
            self.finish_reason = choice.get("finish_reason") or self.finish_reason

    def answer(self) -> dict[str, Any]:
        return {"model": self.model, "usage": self.usage,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(self.text)},
                             "finish_reason": self.finish_reason}]}
