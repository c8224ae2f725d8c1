"""The ``http_request`` node type and the HTTP client session the runtime gives it."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Annotated, Any, ClassVar, Literal

import aiohttp
import pydantic
from multidict import CIMultiDict
from pydantic import BaseModel, ConfigDict, Field
from yarl import URL

from nodes import codec, errors
from nodes.builtin import http_body, ssrf
from nodes.contract import CostModel, NodeType, RunContext, RunPolicy
from nodes.limits import Limits

MAX_REDIRECTS = 10
CONNECT_TIMEOUT_S = 10.0

_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# Credentials meant for one origin must not be handed to the origin a redirect points at.
_ORIGIN_BOUND_HEADERS = ("Authorization", "Proxy-Authorization", "Cookie")
_BODY_HEADERS = ("Content-Type", "Content-Length", "Content-Encoding", "Transfer-Encoding")

Method = Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
Status = Annotated[int, Field(ge=100, le=599)]


def make_http_session(*, allow_private: bool) -> aiohttp.ClientSession:
    """The client session ``http_request`` nodes share (``RunContext.http``).

    Its connector resolves hostnames through :class:`ssrf.SsrfSafeResolver`, so every
    connection, redirects included, is refused when the host resolves to a non-public address
    (unless ``allow_private``). Cookies are not kept: the session is shared by every task, and
    one task's cookies must not reach another's requests. Environment proxies are ignored, as a
    proxy would resolve hostnames where the policy cannot see. Call it with an event loop
    running, and close the session when done.

    Args:
        allow_private: allow loopback, private and other non-public addresses.
    """
    connector = aiohttp.TCPConnector(resolver=ssrf.SsrfSafeResolver(allow_private=allow_private))
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        json_serialize=codec.dumps_str,
        trust_env=False,
    )


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
        url: str = Field(description="Absolute http:// or https:// URL.")
        headers: dict[str, str] = Field(default_factory=dict, description="Request headers.")
        json: Any = Field(None, description="A value sent as a JSON body; null sends none.")
        body: str | None = Field(None, description="A text body, sent as UTF-8.")
        expect_status: list[Status] | None = Field(
            None, min_length=1, description="Statuses that count as success; null means any 2xx."
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

        @pydantic.field_validator("url")
        @classmethod
        def _http_url(cls, value: str) -> str:
            try:
                url = URL(value)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"not a valid URL: {exc}") from None
            if url.scheme not in ("http", "https") or not url.host:
                raise ValueError("must be an absolute http:// or https:// URL")
            return value

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
            return self

    class HttpRequestOutput(BaseModel):
        """What ``http_request`` returns."""

        status: int = Field(description="The final response's HTTP status.")
        headers: dict[str, str] = Field(
            description="Response headers, names in lower case, repeated ones joined by ', '."
        )
        json: Any = Field(description="The body parsed as JSON, or null when it is not JSON.")
        text: str = Field(description="The body decoded with its charset (default UTF-8).")


@dataclass(frozen=True)
class _Request:
    method: str
    url: URL
    headers: CIMultiDict[str]
    data: bytes | None


@dataclass(frozen=True)
class _Response:
    url: URL
    status: int
    headers: dict[str, str]
    body: bytes
    charset: str | None


class HttpRequest(NodeType):
    """Sends one HTTP request, following redirects, and returns the response."""

    type = "http_request"
    description = (
        "Sends an HTTP request and returns the response's status, headers, text and parsed "
        "JSON. Hosts that resolve to private, loopback or other non-public addresses are "
        "refused unless HTTP_ALLOW_PRIVATE is on."
    )
    Params = HttpRequestParams
    Output = HttpRequestOutput
    cost: ClassVar[CostModel] = CostModel(per_run=0.001)
    policy: ClassVar[RunPolicy] = RunPolicy(timeout_s=30, retries=2, retry_backoff_s=1)

    async def run(self, params: HttpRequestParams, ctx: RunContext) -> HttpRequestOutput:
        """Send the request through ``ctx.http`` (or a session of its own) and read the answer.

        The body is read up to ``params.max_response_bytes``, which may not exceed the
        server's ceiling ``ctx.limits.max_response_bytes`` (and is the ceiling when null).

        Raises:
            errors.InvalidParams: ``max_response_bytes`` is above the server's ceiling.
            errors.SsrfBlocked: a host on the way is not public.
            errors.ConnectionFailed: DNS or connection failure.
            errors.NodeTimeout: the attempt's ``ctx.timeout_s`` ran out.
            errors.HttpStatusError: the final status is not the expected one.
            errors.NodeFailed: too many redirects, a bad redirect, a body larger than the
                limit (decoded), or one in an unsupported or corrupt Content-Encoding.
        """
        max_bytes = _response_limit(params.max_response_bytes, ctx.limits)
        if ctx.http is not None:
            response = await _send(ctx.http, params, max_bytes, ctx)
        else:
            async with make_http_session(allow_private=ctx.allow_private) as session:
                response = await _send(session, params, max_bytes, ctx)
        _check_status(params, response)
        return _output(response)


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


async def _send(
    session: aiohttp.ClientSession, params: HttpRequestParams, max_bytes: int, ctx: RunContext
) -> _Response:
    """Follow the request to its final response, turning aiohttp's errors into ours."""
    request = _first_request(params)
    try:
        return await _follow(session, request, max_bytes, ctx)
    except TimeoutError as exc:
        raise errors.NodeTimeout(
            f"{request.method} {_shown(request.url)} took longer than {ctx.timeout_s} s"
        ) from exc
    except aiohttp.InvalidURL as exc:
        raise errors.InvalidParams(f"url: {exc}", field="url") from exc
    except aiohttp.ClientError as exc:
        blocked = _ssrf_cause(exc)
        if blocked is not None:
            raise blocked from exc
        raise errors.ConnectionFailed(
            f"{request.method} {_shown(request.url)} failed: {exc}"
        ) from exc


def _first_request(params: HttpRequestParams) -> _Request:
    headers: CIMultiDict[str] = CIMultiDict(params.headers)
    headers.setdefault("Accept-Encoding", http_body.ACCEPT_ENCODING)
    data: bytes | None = None
    if params.json is not None:
        data = codec.dumps(params.json)
        headers.setdefault("Content-Type", "application/json")
    elif params.body is not None:
        data = params.body.encode()
        headers.setdefault("Content-Type", "text/plain; charset=utf-8")
    return _Request(params.method, URL(params.url), headers, data)


async def _follow(
    session: aiohttp.ClientSession, request: _Request, max_bytes: int, ctx: RunContext
) -> _Response:
    """Send ``request``, and each redirect it leads to, checking every hop's host."""
    timeout = _client_timeout(ctx.timeout_s)
    for _hop in range(MAX_REDIRECTS + 1):
        ssrf.check_url(request.url, allow_private=ctx.allow_private)
        async with session.request(
            request.method,
            request.url,
            headers=request.headers,
            data=request.data,
            allow_redirects=False,
            timeout=timeout,
            auto_decompress=False,  # http_body.read decodes, counting the decoded size
        ) as resp:
            location = resp.headers.get("Location") if resp.status in _REDIRECT_STATUSES else None
            if location is None:
                body = await http_body.read(resp, max_bytes, _shown(resp.url))
                return _Response(request.url, resp.status, _header_dict(resp), body, resp.charset)
        request = _redirected(request, resp.status, location)
    raise errors.NodeFailed(
        f"more than {MAX_REDIRECTS} redirects, the last to {_shown(request.url)}"
    )


def _shown(url: URL) -> str:
    # Error messages end up on the task, readable by every key that may poll it: leave out
    # the parts of a URL that commonly carry secrets (credentials, API keys in the query).
    return str(url.with_user(None).with_query(None).with_fragment(None))


def _client_timeout(total: float | None) -> aiohttp.ClientTimeout:
    # With no node timeout (timeout_s: null) there is no total limit, but a dead host must
    # still not hold the node forever while connecting.
    connect = CONNECT_TIMEOUT_S if total is None else min(CONNECT_TIMEOUT_S, total)
    return aiohttp.ClientTimeout(total=total, connect=connect)


def _redirected(request: _Request, status: int, location: str) -> _Request:
    """The request a redirect asks for, as browsers and aiohttp would send it."""
    try:
        target = request.url.join(URL(location))
    except ValueError as exc:
        raise errors.NodeFailed(f"{_shown(request.url)} redirected to an invalid URL") from exc
    if target.scheme not in ("http", "https") or not target.host:
        raise errors.NodeFailed(
            f"{_shown(request.url)} redirected to a {target.scheme or 'relative'} URL, not http(s)"
        )
    headers = request.headers.copy()
    if target.origin() != request.url.origin():
        for name in _ORIGIN_BOUND_HEADERS:
            headers.popall(name, None)
    # 303 always means "now GET it"; 301/302 after a POST do too, by long-standing practice.
    to_get = (status == 303 and request.method != "HEAD") or (
        status in (301, 302) and request.method == "POST"
    )
    if not to_get:
        return replace(request, url=target, headers=headers)
    for name in _BODY_HEADERS:
        headers.popall(name, None)
    return _Request("GET", target, headers, None)


def _header_dict(resp: aiohttp.ClientResponse) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, value in resp.headers.items():
        key = name.lower()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return headers


def _ssrf_cause(exc: BaseException) -> errors.SsrfBlocked | None:
    """The SsrfBlocked an aiohttp error wraps, if any (the resolver raised it)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, errors.SsrfBlocked):
            return current
        seen.add(id(current))
        current = getattr(current, "os_error", None) or current.__cause__ or current.__context__
    return None


def _check_status(params: HttpRequestParams, response: _Response) -> None:
    expected = params.expect_status
    if (200 <= response.status < 300) if expected is None else (response.status in expected):
        return
    wanted = "a 2xx status" if expected is None else f"one of {expected}"
    snippet = _decode(response.body[:800], response.charset)[:200]
    raise errors.HttpStatusError(
        f"{params.method} {_shown(response.url)} answered {response.status}, "
        f"expected {wanted}: {snippet}",
        status=response.status,
    )


def _decode(body: bytes, charset: str | None) -> str:
    try:
        return body.decode(charset or "utf-8", errors="replace")
    except LookupError:
        # An unknown charset name in Content-Type: UTF-8 is the best guess.
        return body.decode("utf-8", errors="replace")


def _output(response: _Response) -> HttpRequestOutput:
    try:
        parsed = codec.loads(response.body) if response.body else None
    except codec.DecodeError:
        parsed = None
    return HttpRequestOutput(
        status=response.status,
        headers=response.headers,
        json=parsed,
        text=_decode(response.body, response.charset),
    )
