"""The guarded HTTP client every HTTP-speaking node uses (``http_request``, ``file.fetch``, ``llm.*``).

One request, followed through its redirects with the SSRF policy checked at every hop, and
aiohttp's errors turned into ours (:func:`open_final`). The session is the process's shared
``ctx.http`` (:func:`make_http_session`), or one of the node's own where none is given.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, replace
from typing import Annotated, Any

import aiohttp
import pydantic
from multidict import CIMultiDict
from yarl import URL

from nodes import codec, errors
from nodes.builtin import ssrf
from nodes.contract import RunContext

MAX_REDIRECTS = 10
CONNECT_TIMEOUT_S = 10.0

_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# Credentials meant for one origin must not be handed to the origin a redirect points at.
_ORIGIN_BOUND_HEADERS = ("Authorization", "Proxy-Authorization", "Cookie")
_BODY_HEADERS = ("Content-Type", "Content-Length", "Content-Encoding", "Transfer-Encoding")

BodyFactory = Callable[[contextlib.AsyncExitStack], Awaitable[Any]]
"""Makes a request body anew for each send (a multipart body streams files and is used once);
what it opens (a file) it enters into the stack, closed when the response is done."""


def make_http_session(*, allow_private: bool, allow_hosts: Iterable[str] = (),
                      trace_configs: Iterable[aiohttp.TraceConfig] = ()) -> aiohttp.ClientSession:
    """The client session HTTP nodes share (``RunContext.http``).

    Its connector resolves hostnames through :class:`ssrf.SsrfSafeResolver`, so every
    connection, redirects included, is refused when the host resolves to a non-public address
    (unless ``allow_private``, or the host is in ``allow_hosts``: HTTP_ALLOW_HOSTS). Cookies are
    not kept: the session is shared by every task, and one task's cookies must not reach
    another's requests. Environment proxies are ignored, as a proxy would resolve hostnames
    where the policy cannot see. Call it with an event loop running, and close the session.

    Args:
        allow_private: allow loopback, private and other non-public addresses.
        allow_hosts: ``host`` or ``host:port`` entries let through while the guard stays on.
        trace_configs: aiohttp request hooks (the server's tracing adds ``traceparent`` with one).

    Raises:
        ValueError: an ``allow_hosts`` entry cannot be read.
    """
    connector = ssrf.GuardedConnector(allow_private=allow_private, allow_hosts=ssrf.AllowedHosts.parse(allow_hosts))
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        json_serialize=codec.dumps_str,
        trust_env=False,
        trace_configs=list(trace_configs) or None,
    )


@contextlib.asynccontextmanager
async def session_for(ctx: RunContext) -> AsyncIterator[aiohttp.ClientSession]:
    """``ctx.http``, or a session of the node's own (closed afterwards) where none is given."""
    if ctx.http is not None:
        yield ctx.http
        return
    async with make_http_session(allow_private=ctx.allow_private) as session:
        yield session


@dataclass(frozen=True)
class Request:
    """One request to send: ``body`` is bytes, a :data:`BodyFactory`, or None."""

    method: str
    url: URL
    headers: CIMultiDict[str]
    body: bytes | BodyFactory | None = None


@contextlib.asynccontextmanager
async def open_final(
    session: aiohttp.ClientSession, request: Request, ctx: RunContext, *, follow: bool = True
) -> AsyncIterator[aiohttp.ClientResponse]:
    """The final response to ``request`` (redirects followed unless ``follow`` is false), unread.

    Reading its body inside the block is covered too: a timeout or a dropped connection
    there becomes the same error as one while connecting.

    Raises:
        errors.SsrfBlocked: a host on the way is not public (and not allowed).
        errors.ConnectionFailed: DNS or connection failure.
        errors.NodeTimeout: the attempt's ``ctx.timeout_s`` ran out.
        errors.InvalidParams: aiohttp refused the URL.
        errors.NodeFailed: too many redirects, or a bad redirect.
    """
    try:
        for _hop in range(MAX_REDIRECTS + 1):
            ssrf.check_session_url(session, request.url, allow_private=ctx.allow_private)
            async with contextlib.AsyncExitStack() as stack:
                resp = await _send(session, request, ctx, stack)
                location = resp.headers.get("Location") if resp.status in _REDIRECT_STATUSES else None
                if location is None or not follow:
                    yield resp
                    return
            request = _redirected(request, resp.status, location)
    except TimeoutError as exc:
        raise errors.NodeTimeout(f"{request.method} {shown_url(request.url)} took longer than {ctx.timeout_s} s") from exc
    except aiohttp.InvalidURL as exc:
        raise errors.InvalidParams(f"url: {exc}", field="url") from exc
    except aiohttp.ClientError as exc:
        blocked = ssrf_cause(exc)
        if blocked is not None:
            raise blocked from exc
        raise errors.ConnectionFailed(f"{request.method} {shown_url(request.url)} failed: {exc}") from exc
    raise errors.NodeFailed(f"more than {MAX_REDIRECTS} redirects, the last to {shown_url(request.url)}")


async def _send(session: aiohttp.ClientSession, request: Request, ctx: RunContext,
                stack: contextlib.AsyncExitStack) -> aiohttp.ClientResponse:
    body = request.body
    data = body if body is None or isinstance(body, bytes) else await body(stack)
    return await stack.enter_async_context(session.request(
        request.method,
        request.url,
        headers=request.headers,
        data=data,
        allow_redirects=False,
        timeout=client_timeout(ctx.timeout_s),
        auto_decompress=False,  # http_body decodes, counting the decoded size
    ))


def check_http_url(value: str) -> str:
    """``value`` if it is an absolute http(s) URL with a host; else ValueError (pydantic's 422 message)."""
    try:
        url = URL(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"not a valid URL: {exc}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError("must be an absolute http:// or https:// URL")
    return value


HttpUrl = Annotated[str, pydantic.AfterValidator(check_http_url)]
"""A parameter holding an absolute http:// or https:// URL (kept as the string given)."""


def shown_url(url: URL) -> str:
    """``url`` without the parts that commonly carry secrets (credentials, query, fragment).

    Error messages end up on the task, readable by every key that may poll it.
    """
    return str(url.with_user(None).with_query(None).with_fragment(None))


def client_timeout(total: float | None) -> aiohttp.ClientTimeout:
    """The client timeout of one attempt whose own timeout is ``total`` seconds."""
    # With no node timeout (timeout_s: null) there is no total limit, but a dead host must
    # still not hold the node forever while connecting.
    connect = CONNECT_TIMEOUT_S if total is None else min(CONNECT_TIMEOUT_S, total)
    return aiohttp.ClientTimeout(total=total, connect=connect)


def _redirected(request: Request, status: int, location: str) -> Request:
    """The request a redirect asks for, as browsers and aiohttp would send it."""
    try:
        target = request.url.join(URL(location))
    except ValueError as exc:
        raise errors.NodeFailed(f"{shown_url(request.url)} redirected to an invalid URL") from exc
    if target.scheme not in ("http", "https") or not target.host:
        raise errors.NodeFailed(
            f"{shown_url(request.url)} redirected to a {target.scheme or 'relative'} URL, not http(s)"
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
    return Request("GET", target, headers, None)


def header_dict(resp: aiohttp.ClientResponse) -> dict[str, str]:
    """Response headers, names in lower case, repeated ones joined by ``, ``."""
    headers: dict[str, str] = {}
    for name, value in resp.headers.items():
        key = name.lower()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return headers


def ssrf_cause(exc: BaseException) -> errors.SsrfBlocked | None:
    """The SsrfBlocked an aiohttp error wraps, if any (the resolver raised it)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, errors.SsrfBlocked):
            return current
        seen.add(id(current))
        current = getattr(current, "os_error", None) or current.__cause__ or current.__context__
    return None
