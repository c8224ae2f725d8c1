"""``llm.chat``: one chat completion, with images, JSON output and priced tokens, streamed as it is written.

Streaming (``stream``, true by default): when the node runs in a task, it asks the model for a
stream (``stream: true`` and ``stream_options: {include_usage: true}``) and each piece of text
becomes one of the task's ``token`` events as it arrives, for the dashboard, the CLI and the
client's ``events()``. The output and the cost are the same as without streaming: the text is
the pieces joined and the usage is the last chunk's. A server that ignores the flag and answers
JSON works unchanged; ``stream: false`` is for one that refuses the request. Outside a task
(nothing to tell) the node never asks for a stream.
"""

from __future__ import annotations

import base64
import contextlib
import warnings
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from nodes import codec, errors
from nodes.builtin import file_fetch, http_client
from nodes.builtin.llm import client
from nodes.builtin.llm.common import LLM_COST, LLM_POLICY, LlmParams
from nodes.contract import CostModel, NodeType, RunContext, RunPolicy
from nodes.files import File

MAX_IMAGE_BYTES = 20 * 1024 * 1024  # OpenAI's own limit per image
Role = Literal["system", "developer", "user", "assistant", "tool"]


class Message(BaseModel):
    """One chat message, as the API takes it."""

    model_config = ConfigDict(extra="forbid")

    role: Role
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None


@contextlib.contextmanager
def _json_field_allowed() -> Iterator[None]:
    # SPEC §8 names the output field "json"; pydantic warns it shadows BaseModel.json().
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message='Field name "json"', category=UserWarning)
        yield


class ChatParams(LlmParams):
    """Parameters of ``llm.chat``: ``prompt`` or ``messages`` (one of them, checked at run)."""

    prompt: str | None = Field(None, description="The user message; or give messages.")
    messages: list[Message] | None = Field(None, min_length=1, description="The whole conversation.")
    system: str | None = Field(None, description="A system message put first.")
    images: list[File | str] = Field(
        default_factory=list,
        description="Images for the last user message: files (sent inline as base64 data URLs) "
        "or http(s)/data URLs (passed to the model as they are).")
    temperature: float | None = Field(None, ge=0, le=2)
    max_tokens: int | None = Field(None, ge=1)
    response_format: Literal["text", "json"] | dict[str, Any] = Field(
        "text", description='"text", "json" (a JSON object), or a JSON schema the answer must follow.')
    stream: bool = Field(
        True, description="Ask the model to stream its answer, each piece becoming a token event of the task "
        "as it arrives (the output and cost are the same). false for a server that refuses stream requests.")

    @pydantic.field_validator("images", mode="before")
    @classmethod
    def _one_image(cls, value: Any) -> Any:
        # An edge from a start's `image` delivers one file or URL: a list of one, as in ComfyUI.
        return value if isinstance(value, list) else [value]

    @pydantic.field_validator("images")
    @classmethod
    def _image_urls(cls, value: list[File | str]) -> list[File | str]:
        for item in value:
            if isinstance(item, str) and not item.lower().startswith(("http://", "https://", "data:image/")):
                raise ValueError("an image is a file, an http(s) URL or a data:image/ URL")
        return value

    @pydantic.model_validator(mode="after")
    def _not_both(self) -> ChatParams:
        if self.prompt is not None and self.messages is not None:
            raise ValueError("give either prompt or messages, not both")
        return self


class Usage(BaseModel):
    """Tokens the answer reports."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


with _json_field_allowed():

    class ChatOutput(BaseModel):
        """What ``llm.chat`` returns."""

        text: str = Field(description="The answer's text (empty when the model gave none).")
        json: Any = Field(description="The text parsed, when response_format asked for JSON; else null.")
        usage: Usage
        model: str = Field(description="The model that answered, as the API names it.")
        finish_reason: str | None = Field(description="stop, length, content_filter, tool_calls…")


class LlmChat(NodeType):
    """Asks a chat model (any OpenAI-compatible ``/chat/completions``)."""

    type = "llm.chat"
    description = (
        "Sends a prompt or messages (with images and an optional system message) to an "
        "OpenAI-compatible /chat/completions endpoint and returns the answer's text, the JSON "
        "it holds when response_format asks for JSON, the token usage, the model and the finish "
        "reason. Tokens are priced into the cost with prices, else the server's LLM_PRICES. "
        "In a task the answer streams: each piece of text is a token event as it arrives."
    )
    Params = ChatParams
    Output = ChatOutput

    @classmethod
    def cacheable(cls, params: Mapping[str, Any]) -> bool:
        """Only at temperature 0 is an answer repeatable enough to serve from the output cache;
        unset means the provider's default (not 0)."""
        temperature = params.get("temperature")
        return not isinstance(temperature, bool) and temperature == 0
    cost: ClassVar[CostModel] = LLM_COST
    policy: ClassVar[RunPolicy] = LLM_POLICY

    async def run(self, params: ChatParams, ctx: RunContext) -> ChatOutput:
        """Build the request, send it (see :mod:`nodes.builtin.llm.client` for retries), read the answer.

        Raises:
            errors.InvalidParams: neither prompt nor messages, or an image that cannot be sent.
            errors.NodeFailed: JSON was asked for and the answer is not JSON.
            errors.HttpStatusError, errors.ConnectionFailed, errors.NodeTimeout, errors.SsrfBlocked.
        """
        body = await chat_body(params, ctx)
        streamed = params.stream and ctx.say is not None
        if streamed:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}  # the usage comes in a last chunk
            if ctx.attempt > 1:  # the tokens of the failed try stay on the stream: say they are void
                ctx.log(f"try {ctx.attempt}: the answer starts again", "warning")
        request = http_client.Request("POST", client.endpoint(params.base_url, "/chat/completions"),
                                      client.auth_headers(params.api_key), codec.dumps(body))
        request.headers["Content-Type"] = "application/json"
        if streamed:
            request.headers["Accept"] = "text/event-stream, application/json"
        answer = await client.call(ctx, request)
        return _output(params, answer, ctx)


async def chat_body(params: ChatParams, ctx: RunContext) -> dict[str, Any]:
    """The ``/chat/completions`` request body for ``params``."""
    messages = await _messages(params, ctx)
    body: dict[str, Any] = {"model": params.model, "messages": messages}
    if params.temperature is not None:
        body["temperature"] = params.temperature
    if params.max_tokens is not None:
        body["max_tokens"] = params.max_tokens
    if params.response_format == "json":
        body["response_format"] = {"type": "json_object"}
    elif isinstance(params.response_format, dict):
        body["response_format"] = {"type": "json_schema", "json_schema": _json_schema(params.response_format)}
    return body


def _json_schema(given: dict[str, Any]) -> dict[str, Any]:
    # A bare schema is wrapped as the API wants; {"name", "schema", …} is taken as it is.
    if "schema" in given and "name" in given:
        return given
    return {"name": "output", "schema": given}


async def _messages(params: ChatParams, ctx: RunContext) -> list[dict[str, Any]]:
    if params.messages is not None:
        messages = [m.model_dump(exclude_none=True) for m in params.messages]
    elif params.prompt is not None:
        messages = [{"role": "user", "content": params.prompt}]
    else:
        raise errors.InvalidParams("give prompt or messages", field="prompt")
    if params.system is not None:
        messages.insert(0, {"role": "system", "content": params.system})
    if params.images:
        await _attach_images(messages, params.images, ctx)
    return messages


async def _attach_images(messages: list[dict[str, Any]], images: list[File | str], ctx: RunContext) -> None:
    """Add the images as ``image_url`` parts of the last user message."""
    last = next((m for m in reversed(messages) if m["role"] == "user"), None)
    if last is None:
        raise errors.InvalidParams("images need a user message to go with", field="images")
    content = last.get("content")
    parts = list(content) if isinstance(content, list) else ([{"type": "text", "text": content}] if content else [])
    for i, image in enumerate(images):
        url = image if isinstance(image, str) else await data_url(ctx, image, f"images.{i}")
        parts.append({"type": "image_url", "image_url": {"url": url}})
    last["content"] = parts


async def data_url(ctx: RunContext, given: File, field: str) -> str:
    """The file's bytes as a ``data:<type>;base64,…`` URL (how images go inline)."""
    file = await file_fetch.stored(ctx, given, field)
    if file.size > MAX_IMAGE_BYTES:
        raise errors.InvalidParams(f"{field}: {file.size} bytes is more than an image may be ({MAX_IMAGE_BYTES})",
                                   field=field)
    data = bytearray()
    async for chunk in file_fetch.store_of(ctx).read(file):
        data += chunk
    kind = file.content_type.split(";", 1)[0].strip() or "application/octet-stream"
    return f"data:{kind};base64,{base64.b64encode(data).decode('ascii')}"


def _output(params: ChatParams, answer: Any, ctx: RunContext) -> ChatOutput:
    try:
        choice = answer["choices"][0]
        message = choice.get("message") or {}
        usage = Usage.model_validate(answer.get("usage") or {})
    except (KeyError, IndexError, TypeError, AttributeError, pydantic.ValidationError) as exc:
        raise errors.NodeFailed(f"the answer is not a chat completion: {type(exc).__name__}: {exc}") from None
    text = message.get("content") or ""
    model = str(answer.get("model") or params.model)
    client.price(ctx, params.prices, (params.model, model), usage.prompt_tokens, usage.completion_tokens)
    parsed = None
    if params.response_format != "text":
        try:
            parsed = codec.loads(text)
        except codec.DecodeError:
            raise errors.NodeFailed(f"JSON was asked for and the model answered something else: {text[:200]}") from None
    return ChatOutput(text=text, json=parsed, usage=usage, model=model, finish_reason=choice.get("finish_reason"))
