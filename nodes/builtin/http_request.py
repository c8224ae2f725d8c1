"""The ``http_request`` node type: one HTTP request, its answer as JSON, text or a stored file."""

from __future__ import annotations

import contextlib
import email.message
import warnings
from collections.abc import Iterator
from typing import Annotated, Any, ClassVar, Literal

import aiohttp
import pydantic
from multidict import CIMultiDict
from pydantic import BaseModel, ConfigDict, Field
from yarl import URL

from nodes import codec, errors
from nodes.builtin import file_fetch, http_body, http_client
from nodes.builtin.http_client import Request, make_http_session, shown_url
from nodes.contract import CostModel, NodeType, RunContext, RunPolicy
from nodes.files import File
from nodes.limits import Limits

__all__ = ["HttpRequest", "HttpRequestOutput", "HttpRequestParams", "make_http_session"]

Method = Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
Status = Annotated[int, Field(ge=100, le=599)]
ResponseMode = Literal["auto", "json", "text", "file"]

# Media types that "auto" reads as text; anything else with a body becomes a file.
_TEXT_TYPES = ("text/", "application/json", "application/xml", "application/javascript",
               "application/x-www-form-urlencoded", "application/x-ndjson", "application/yaml")
_TEXT_SUFFIXES = ("+json", "+xml")


@contextlib.contextmanager
def _json_field_allowed() -> Iterator[None]:
    # SPEC §5 names the field "json"; pydantic warns that it shadows BaseModel's deprecated
    # .json() method, which the models below never use. An alias would break
    # NodeType.accepts_input("json"), which looks at field names.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message='Field name "json"', category=UserWarning)
        yield


with _json_field_allowed():

    class HttpRequestParams(BaseModel):
        """Parameters of ``http_request``; ``json`` and ``body`` are mutually exclusive."""

        model_config = ConfigDict(extra="forbid")

        method: Method = Field("GET", description="HTTP method; lower case is accepted.")
        url: http_client.HttpUrl = Field(description="Absolute http:// or https:// URL.")
        headers: dict[str, str] = Field(default_factory=dict, description="Request headers.")
        json: Any = Field(None, description="A value sent as a JSON body; null sends none.")
        body: str | None = Field(None, description="A text body, sent as UTF-8.")
        expect_status: list[Status] | None = Field(
            None, min_length=1, description="Statuses that count as success; null means any 2xx."
        )
        response: ResponseMode = Field(
            "auto",
            description="How the body is returned: auto (a non-text content type becomes a file), "
            "json (must parse), text, or file (always stored as a file).",
        )
        files: dict[str, File] | None = Field(
            None,
            description="Files sent as a multipart/form-data body, by part name; the top-level "
            "keys of a json object become text parts beside them.",
        )
        max_response_bytes: int | None = Field(
            None,
            ge=1,
            description="Largest (decoded) body accepted; null means the server's ceiling "
            "(MAX_RESPONSE_BYTES, 10 MiB by default), and a value above it is refused.",
        )

        @pydantic.field_validator("method", mode="before")
        @classmethod
        def _upper_method(cls, value: Any) -> Any:
            return value.upper() if isinstance(value, str) else value


        @pydantic.field_validator("headers")
        @classmethod
        def _no_header_injection(cls, value: dict[str, str]) -> dict[str, str]:
            for name, text in value.items():
                if not name or any(c in name for c in "\r\n:") or any(c in text for c in "\r\n"):
                    raise ValueError(f"header {name!r} has an invalid name or value")
            return value

        @pydantic.field_validator("max_response_bytes")
        @classmethod
        def _within_ceiling(cls, value: int | None, info: pydantic.ValidationInfo) -> int | None:
            # The ceiling is known where validate_params is given the server's Limits (at
            # submit time); run() checks again against ctx.limits in any case.
            if value is not None and isinstance(info.context, Limits):
                ceiling = info.context.max_response_bytes
                if value > ceiling:
                    raise ValueError(_above_ceiling(value, ceiling))
            return value

        @pydantic.model_validator(mode="after")
        def _one_body(self) -> HttpRequestParams:
            if self.json is not None and self.body is not None:
                raise ValueError("give either json or body, not both")
            if self.files and (self.body is not None or (self.json is not None and not isinstance(self.json, dict))):
                raise ValueError("with files, only a json object (its keys become form fields) may be given")
            return self

    class HttpRequestOutput(BaseModel):
        """What ``http_request`` returns."""

        status: int = Field(description="The final response's HTTP status.")
        headers: dict[str, str] = Field(
            description="Response headers, names in lower case, repeated ones joined by ', '."
        )
        json: Any = Field(description="The body parsed as JSON, or null when it is not JSON.")
        text: str = Field(description="The body decoded with its charset (default UTF-8); "
                          "empty when the body became a file.")
        file: File | None = Field(None, description="The body as a stored file, or null unless it became one.")


class HttpRequest(NodeType):
    """Sends one HTTP request, following redirects, and returns the response."""

    type = "http_request"
    description = (
        "Sends an HTTP request (JSON, text or multipart with files) and returns the response's "
        "status, headers, text and parsed JSON, or its body as a stored file (response: auto "
        "stores any non-text content type). Hosts that resolve to private, loopback or other "
        "non-public addresses are refused unless HTTP_ALLOW_PRIVATE is on or the host is in "
        "HTTP_ALLOW_HOSTS."
    )
    Params = HttpRequestParams
    Output = HttpRequestOutput
    cost: ClassVar[CostModel] = CostModel(per_run=0.001)
    policy: ClassVar[RunPolicy] = RunPolicy(timeout_s=30, retries=2, retry_backoff_s=1)

    async def run(self, params: HttpRequestParams, ctx: RunContext) -> HttpRequestOutput:
        """Send the request through ``ctx.http`` (or a session of its own) and read the answer.

        A body read into the output is bounded by ``params.max_response_bytes``, which may not
        exceed the server's ceiling ``ctx.limits.max_response_bytes`` (and is the ceiling when
        null); a body stored as a file streams into ``ctx.files``, bounded by MAX_FILE_BYTES.

        Raises:
            errors.InvalidParams: ``max_response_bytes`` is above the server's ceiling, or a
                file in ``files`` does not exist.
            errors.SsrfBlocked: a host on the way is not public.
            errors.ConnectionFailed: DNS or connection failure.
            errors.NodeTimeout: the attempt's ``ctx.timeout_s`` ran out.
            errors.HttpStatusError: the final status is not the expected one.
            errors.NodeFailed: too many redirects, a bad redirect, a body larger than the
                limit (decoded), one in an unsupported or corrupt Content-Encoding, or not
                JSON when ``response`` is ``json``.
        """
        max_bytes = _response_limit(params.max_response_bytes, ctx.limits)
        request = _first_request(params, ctx)
        async with http_client.session_for(ctx) as session, \
                http_client.open_final(session, request, ctx) as resp:
            return await _answer(params, resp, ctx, max_bytes)


def _above_ceiling(value: int, ceiling: int) -> str:
    return f"{value} is above the server's ceiling of {ceiling} bytes (MAX_RESPONSE_BYTES)"


def _response_limit(requested: int | None, limits: Limits) -> int:
    """The body size this run accepts: the request's, which may only lower the ceiling."""
    ceiling = limits.max_response_bytes
    if requested is None:
        return ceiling
    if requested > ceiling:
        raise errors.InvalidParams(
            f"max_response_bytes: {_above_ceiling(requested, ceiling)}", field="max_response_bytes"
        )
    return requested


def _first_request(params: HttpRequestParams, ctx: RunContext) -> Request:
    headers: CIMultiDict[str] = CIMultiDict(params.headers)
    headers.setdefault("Accept-Encoding", http_body.ACCEPT_ENCODING)
    data: bytes | http_client.BodyFactory | None = None
    if params.files:
        data = _multipart(params.json or {}, params.files, ctx)
        headers.popall("Content-Type", None)  # the writer's, with its boundary
    elif params.json is not None:
        data = codec.dumps(params.json)
        headers.setdefault("Content-Type", "application/json")
    elif params.body is not None:
        data = params.body.encode()
        headers.setdefault("Content-Type", "text/plain; charset=utf-8")
    return Request(params.method, URL(params.url), headers, data)


def _multipart(fields: dict[str, Any], files: dict[str, File], ctx: RunContext) -> http_client.BodyFactory:
    """A body factory: ``fields`` as text parts, then each file streamed from the store."""
    async def make(stack: contextlib.AsyncExitStack) -> aiohttp.MultipartWriter:
        writer = aiohttp.MultipartWriter("form-data")
        for name, value in fields.items():
            part = writer.append(value if isinstance(value, str) else codec.dumps_str(value))
            part.set_content_disposition("form-data", name=name)
        for name, given in files.items():
            file = await file_fetch.stored(ctx, given, f"files.{name}")
            path = await stack.enter_async_context(file_fetch.store_of(ctx).local_path(file))
            handle = stack.enter_context(path.open("rb"))
            part = writer.append(handle, {"Content-Type": file.content_type})
            part.set_content_disposition("form-data", name=name, filename=file.name)
        return writer

    return make


async def _answer(params: HttpRequestParams, resp: aiohttp.ClientResponse, ctx: RunContext,
                  max_bytes: int) -> HttpRequestOutput:
    shown = shown_url(resp.url)
    headers = http_client.header_dict(resp)
    if _status_ok(params, resp.status) and _becomes_file(params, resp):
        file = await file_fetch.store_response(resp, ctx, shown)
        return HttpRequestOutput(status=resp.status, headers=headers, json=None, text="", file=file)
    body = await http_body.read(resp, max_bytes, shown)
    _check_status(params, resp.status, body, resp.charset, shown)
    text = _decode(body, resp.charset)
    if params.response == "text":
        return HttpRequestOutput(status=resp.status, headers=headers, json=None, text=text, file=None)
    try:
        parsed = codec.loads(body) if body else None
    except codec.DecodeError:
        if params.response == "json":
            raise errors.NodeFailed(f"{params.method} {shown} answered a body that is not JSON: {text[:200]}") from None
        parsed = None
    return HttpRequestOutput(status=resp.status, headers=headers, json=parsed, text=text, file=None)


def _becomes_file(params: HttpRequestParams, resp: aiohttp.ClientResponse) -> bool:
    """Whether the body is stored as a file: ``file`` mode, or ``auto`` and not text."""
    if params.method == "HEAD" or resp.status in (204, 304) or params.response in ("json", "text"):
        return False
    if params.response == "file":
        return True
    if resp.content_length == 0 or "Content-Type" not in resp.headers:
        return False  # nothing to store, or nothing says it is not text (as before "auto")
    kind = _media_type(resp.headers["Content-Type"])
    return not (kind.startswith(_TEXT_TYPES) or kind.endswith(_TEXT_SUFFIXES))


def _media_type(header: str) -> str:
    message = email.message.Message()
    message["Content-Type"] = header
    return message.get_content_type()


def _status_ok(params: HttpRequestParams, status: int) -> bool:
    expected = params.expect_status
    return (200 <= status < 300) if expected is None else (status in expected)


def _check_status(params: HttpRequestParams, status: int, body: bytes, charset: str | None, shown: str) -> None:
    if _status_ok(params, status):
        return
    expected = params.expect_status
    wanted = "a 2xx status" if expected is None else f"one of {expected}"
    snippet = _decode(body[:800], charset)[:200]
    raise errors.HttpStatusError(
        f"{params.method} {shown} answered {status}, expected {wanted}: {snippet}", status=status
    )


def _decode(body: bytes, charset: str | None) -> str:
    try:
        return body.decode(charset or "utf-8", errors="replace")
    except LookupError:
        # An unknown charset name in Content-Type: UTF-8 is the best guess.
        return body.decode("utf-8", errors="replace")
