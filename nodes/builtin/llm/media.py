"""``llm.transcribe``, ``llm.embed`` and ``llm.image`` on the OpenAI-compatible API."""

from __future__ import annotations

import base64
import binascii
import contextlib
from typing import Any, ClassVar

import aiohttp
import pydantic
from multidict import CIMultiDict
from pydantic import BaseModel, Field
from yarl import URL

from nodes import codec, errors
from nodes.builtin import file_fetch, http_body, http_client
from nodes.builtin.llm import client
from nodes.builtin.llm.common import LLM_COST, LLM_POLICY, LlmParams
from nodes.contract import CostModel, NodeType, RunContext, RunPolicy
from nodes.files import File

MAX_IMAGE_BYTES = 50 * 1024 * 1024


def _json_request(params: LlmParams, path: str, body: dict[str, Any]) -> http_client.Request:
    headers = client.auth_headers(params.api_key)
    headers["Content-Type"] = "application/json"
    return http_client.Request("POST", client.endpoint(params.base_url, path), headers, codec.dumps(body))


def _malformed(what: str, exc: Exception) -> errors.NodeFailed:
    return errors.NodeFailed(f"the answer is not {what}: {type(exc).__name__}: {exc}")


# --- llm.transcribe -------------------------------------------------------------------------

class TranscribeParams(LlmParams):
    """Parameters of ``llm.transcribe``."""

    audio: File = Field(description="The audio (or video) file to transcribe.")
    language: str | None = Field(None, description="ISO-639-1 code of the spoken language, e.g. en.")
    prompt: str | None = Field(None, description="Text to guide the style or spelling.")


class Segment(BaseModel):
    """A stretch of the transcript with its times, in seconds."""

    id: int | None = None
    start: float
    end: float
    text: str


class TranscribeOutput(BaseModel):
    """What ``llm.transcribe`` returns."""

    text: str
    segments: list[Segment] = Field(description="Timed segments, when the API gives them.")
    duration_s: float | None = Field(description="The audio's length, when the API gives it.")


class LlmTranscribe(NodeType):
    """Transcribes audio (``/audio/transcriptions``, verbose JSON)."""

    type = "llm.transcribe"
    description = (
        "Sends an audio file to an OpenAI-compatible /audio/transcriptions endpoint "
        "(multipart, response_format verbose_json) and returns the text, timed segments and "
        "duration. Tokens, when the API reports them, are priced into the cost."
    )
    Params = TranscribeParams
    Output = TranscribeOutput
    cost: ClassVar[CostModel] = LLM_COST
    policy: ClassVar[RunPolicy] = LLM_POLICY

    async def run(self, params: TranscribeParams, ctx: RunContext) -> TranscribeOutput:
        """Upload the audio, streamed from the store, and read the transcript."""
        audio = await file_fetch.stored(ctx, params.audio, "audio")
        fields = {"model": params.model, "response_format": "verbose_json", "language": params.language,
                  "prompt": params.prompt}

        async def body(stack: contextlib.AsyncExitStack) -> aiohttp.MultipartWriter:
            writer = aiohttp.MultipartWriter("form-data")
            for name, value in fields.items():
                if value is not None:
                    writer.append(value).set_content_disposition("form-data", name=name)
            path = await stack.enter_async_context(file_fetch.store_of(ctx).local_path(audio))
            part = writer.append(stack.enter_context(path.open("rb")), {"Content-Type": audio.content_type})
            part.set_content_disposition("form-data", name="file", filename=audio.name)
            return writer

        request = http_client.Request("POST", client.endpoint(params.base_url, "/audio/transcriptions"),
                                      client.auth_headers(params.api_key), body)
        answer = await client.call(ctx, request)
        return _transcript(params, answer, ctx)


def _transcript(params: TranscribeParams, answer: Any, ctx: RunContext) -> TranscribeOutput:
    try:
        segments = [Segment.model_validate(s) for s in answer.get("segments") or []]
        duration = answer.get("duration")
        text = str(answer["text"])
    except (KeyError, TypeError, AttributeError, pydantic.ValidationError) as exc:
        raise _malformed("a transcription", exc) from None
    usage = answer.get("usage") or {}
    if usage.get("type") == "duration" and isinstance(usage.get("seconds"), int | float):
        ctx.report_usage("audio_seconds", usage["seconds"])
    elif "input_tokens" in usage:
        client.price(ctx, params.prices, (params.model,), usage.get("input_tokens", 0), usage.get("output_tokens", 0))
    return TranscribeOutput(text=text, segments=segments,
                            duration_s=float(duration) if isinstance(duration, int | float) else None)


# --- llm.embed ------------------------------------------------------------------------------

class EmbedParams(LlmParams):
    """Parameters of ``llm.embed``."""

    input: str | list[str] = Field(description="A text, or a list of texts (one vector each).")

    @pydantic.field_validator("input")
    @classmethod
    def _not_empty(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and not value:
            raise ValueError("give at least one text")
        return value


class EmbedUsage(BaseModel):
    prompt_tokens: int = 0
    total_tokens: int = 0


class EmbedOutput(BaseModel):
    """What ``llm.embed`` returns."""

    vectors: list[list[float]] = Field(description="One vector per input text, in input order.")
    usage: EmbedUsage


class LlmEmbed(NodeType):
    """Embeds texts as vectors (``/embeddings``)."""

    type = "llm.embed"
    description = ("Sends a text or a list of texts to an OpenAI-compatible /embeddings endpoint and "
                   "returns one vector per text, in order, with the token usage priced into the cost.")
    Params = EmbedParams
    Output = EmbedOutput
    cost: ClassVar[CostModel] = LLM_COST
    policy: ClassVar[RunPolicy] = LLM_POLICY

    async def run(self, params: EmbedParams, ctx: RunContext) -> EmbedOutput:
        """Ask for the embeddings and put them back in input order."""
        answer = await client.call(ctx, _json_request(params, "/embeddings", {"model": params.model,
                                                                              "input": params.input}))
        try:
            rows = sorted(answer["data"], key=lambda row: row.get("index", 0))
            vectors = [[float(x) for x in row["embedding"]] for row in rows]
            usage = EmbedUsage.model_validate(answer.get("usage") or {})
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise _malformed("a list of embeddings", exc) from None
        client.price(ctx, params.prices, (params.model, answer.get("model")), usage.prompt_tokens, 0)
        return EmbedOutput(vectors=vectors, usage=usage)


# --- llm.image ------------------------------------------------------------------------------

class ImageParams(LlmParams):
    """Parameters of ``llm.image``."""

    prompt: str = Field(min_length=1, description="What to draw.")
    size: str | None = Field(None, pattern=r"^(auto|\d{2,5}x\d{2,5})$", description="e.g. 1024x1024.")
    n: int = Field(1, ge=1, le=10, description="How many images.")


class ImageOutput(BaseModel):
    """What ``llm.image`` returns."""

    images: list[File] = Field(description="The generated images, stored in the file store.")


class LlmImage(NodeType):
    """Generates images (``/images/generations``) into the file store."""

    type = "llm.image"
    description = ("Asks an OpenAI-compatible /images/generations endpoint for n images and stores "
                   "them (b64_json or url answers) in the file store; tokens, when reported, are priced.")
    Params = ImageParams
    Output = ImageOutput
    cost: ClassVar[CostModel] = LLM_COST
    policy: ClassVar[RunPolicy] = LLM_POLICY

    async def run(self, params: ImageParams, ctx: RunContext) -> ImageOutput:
        """Ask for the images, then store each (decoded, or downloaded through the guard)."""
        file_fetch.store_of(ctx)  # fail before paying for images that could not be kept
        body: dict[str, Any] = {"model": params.model, "prompt": params.prompt, "n": params.n}
        if params.size is not None:
            body["size"] = params.size
        answer = await client.call(ctx, _json_request(params, "/images/generations", body))
        try:
            items = list(answer["data"])
        except (KeyError, TypeError) as exc:
            raise _malformed("a list of images", exc) from None
        images = [await _store_image(ctx, item, i) for i, item in enumerate(items)]
        usage = answer.get("usage") or {}
        if "input_tokens" in usage:
            client.price(ctx, params.prices, (params.model,), usage.get("input_tokens", 0), usage.get("output_tokens", 0))
        return ImageOutput(images=images)


async def _store_image(ctx: RunContext, item: Any, index: int) -> File:
    store = file_fetch.store_of(ctx)
    if isinstance(item, dict) and isinstance(item.get("b64_json"), str):
        try:
            data = base64.b64decode(item["b64_json"], validate=True)
        except binascii.Error as exc:
            raise _malformed("base64 image data", exc) from None
        kind, ext = _sniff(data)
        return await store.put_bytes(data, name=f"image-{index + 1}.{ext}", content_type=kind)
    if isinstance(item, dict) and isinstance(item.get("url"), str):
        return await _download(ctx, item["url"])
    raise errors.NodeFailed(f"image {index + 1} of the answer has neither b64_json nor url")


async def _download(ctx: RunContext, url: str) -> File:
    request = http_client.Request("GET", URL(url), CIMultiDict({"Accept-Encoding": http_body.ACCEPT_ENCODING}))
    async with http_client.session_for(ctx) as session, http_client.open_final(session, request, ctx) as resp:
        shown = http_client.shown_url(resp.url)
        if not 200 <= resp.status < 300:
            raise errors.HttpStatusError(f"GET {shown} (a generated image) answered {resp.status}", status=resp.status)
        return await file_fetch.store_response(resp, ctx, shown, MAX_IMAGE_BYTES)


def _sniff(data: bytes) -> tuple[str, str]:
    """The image's media type and file extension, from its first bytes."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png", "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg", "jpg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp", "webp"
    return "application/octet-stream", "bin"
