"""Calling an OpenAI-compatible API through the guarded session, and pricing what it reports.

Why not the ``openai`` package: its transport is httpx, which resolves and connects on its own,
so the SSRF guard (checked on every resolved address, redirects included) and HTTP_ALLOW_HOSTS
would have to be rebuilt for a second client, and every node would pay httpx's per-request
overhead on top of ours. The four endpoints used here are plain JSON or multipart over HTTP.

Retries: an answer of 429 or 5xx carrying ``Retry-After`` (or ``retry-after-ms``) is sent
again by the node itself after that wait, up to :data:`MAX_WAITS` times, as long as the wait
ends within the attempt's ``timeout_s`` and is at most :data:`MAX_WAIT_S`. Without the header,
or when the wait does not fit, the node fails with a retryable ``http_status`` and the
executor's retries (``retries``/``retry_backoff_s``, 3 and 1 s by default for ``llm.*``) take
over. Other 4xx are never retried.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import aiohttp
from multidict import CIMultiDict
from pydantic import BaseModel, ConfigDict, Field
from yarl import URL

from nodes import codec, errors
from nodes.builtin import http_body, http_client
from nodes.builtin.llm import stream
from nodes.contract import RunContext

MAX_WAITS = 5
MAX_WAIT_S = 60.0
# Above MAX_RESPONSE_BYTES on purpose: an images answer carries its images in base64 (they go
# to the file store, not the output); the output ceiling still bounds what the node returns.
MAX_ANSWER_BYTES = 64 * 1024 * 1024
PER_MILLION = 1_000_000


class TokenPrices(BaseModel):
    """A model's price in credits per 1M tokens (the ``prices`` parameter, an ``LLM_PRICES`` entry)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input: float = Field(ge=0, description="Credits per 1M input (prompt) tokens.")
    output: float = Field(default=0.0, ge=0, description="Credits per 1M output (completion) tokens.")


def endpoint(base_url: str, path: str) -> URL:
    """``base_url`` (``…/v1``) joined with ``path`` (``/chat/completions``)."""
    return URL(base_url.rstrip("/") + path)


def auth_headers(api_key: Any) -> CIMultiDict[str]:
    """The headers of every call: JSON accepted, and the key as a Bearer token.

    Raises:
        errors.InvalidParams: ``api_key`` is still a ``{"$secret": …}`` reference (nothing resolved it).
    """
    headers: CIMultiDict[str] = CIMultiDict({"Accept": "application/json"})
    if api_key is not None and not isinstance(api_key, str):
        raise errors.InvalidParams("api_key: the secret reference was not resolved before the run", field="api_key")
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return headers


async def call(ctx: RunContext, request: http_client.Request) -> Any:
    """Send ``request`` and return the answer's JSON, waiting out ``Retry-After`` (see module doc).

    A 2xx answer that is an event stream (the request asked for ``stream: true``) is read as it
    arrives by :func:`nodes.builtin.llm.stream.read` and returned folded into one answer.

    Raises:
        errors.HttpStatusError: a non-2xx answer (retryable for 429 and 5xx).
        errors.NodeFailed: the answer is not JSON, or larger than the limit.
        errors.SsrfBlocked, errors.ConnectionFailed, errors.NodeTimeout: as ``http_request``.
    """
    deadline = None if ctx.timeout_s is None else time.monotonic() + ctx.timeout_s
    async with http_client.session_for(ctx) as session:
        for waits in range(MAX_WAITS + 1):
            status, wait, answer = await _send_once(session, request, ctx)
            if status < 300:
                return answer
            if wait is None or waits == MAX_WAITS or not _fits(wait, deadline):
                raise _status_error(request, status, answer)
            await asyncio.sleep(wait)
    raise AssertionError("unreachable: the loop returns or raises")


async def _send_once(session: aiohttp.ClientSession, request: http_client.Request,
                     ctx: RunContext) -> tuple[int, float | None, Any]:
    """One send: the status, the wait a retryable answer asks for, and the parsed body."""
    async with http_client.open_final(session, request, ctx, follow=False) as resp:
        shown = http_client.shown_url(resp.url)
        if resp.status < 300 and stream.is_event_stream(resp):
            return resp.status, None, await stream.read(resp, ctx, MAX_ANSWER_BYTES, shown)
        body = await http_body.read(resp, MAX_ANSWER_BYTES, shown)
        retryable = resp.status == 429 or resp.status >= 500
        wait = retry_after_s(resp.headers) if retryable else None
        status = resp.status
    try:
        return status, wait, codec.loads(body) if body else None
    except codec.DecodeError:
        if status >= 300:
            return status, wait, body.decode("utf-8", "replace")
        raise errors.NodeFailed(f"{request.method} {shown} answered {status} with a body that is not JSON") from None


def _fits(wait: float, deadline: float | None) -> bool:
    if wait > MAX_WAIT_S:
        return False
    # Leave room for the request after the wait: half a second, or the wait itself if shorter.
    return deadline is None or time.monotonic() + wait + min(0.5, wait) < deadline


def retry_after_s(headers: Mapping[str, str]) -> float | None:
    """The wait ``Retry-After`` (seconds or an HTTP date) or ``retry-after-ms`` asks for, if any."""
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _status_error(request: http_client.Request, status: int, answer: Any) -> errors.HttpStatusError:
    """The failure for a non-2xx answer, with the API's own message when it gave one."""
    detail = answer
    if isinstance(answer, dict):
        error = answer.get("error")
        detail = error.get("message", error) if isinstance(error, dict) else (error or answer)
    text = detail if isinstance(detail, str) else codec.dumps_str(detail)
    return errors.HttpStatusError(
        f"{request.method} {http_client.shown_url(request.url)} answered {status}: {text[:300]}", status=status
    )


def price(ctx: RunContext, given: TokenPrices | None, models: tuple[str | None, ...],
          input_tokens: float, output_tokens: float) -> None:
    """Report the tokens, and what they cost: ``given`` prices, else the first of ``models`` in
    ``ctx.prices`` (the name asked for, then the one answered, e.g. a dated snapshot).

    Usage reported: ``input_tokens``, ``output_tokens`` (for the record) and ``token_credits``,
    which the ``llm.*`` cost models price at 1 credit per unit.
    """
    ctx.report_usage("input_tokens", input_tokens)
    ctx.report_usage("output_tokens", output_tokens)
    table = given.model_dump() if given is not None else next(
        (ctx.prices[m] for m in models if m and m in ctx.prices), None)
    if table:
        credits = (input_tokens * table.get("input", 0.0) + output_tokens * table.get("output", 0.0)) / PER_MILLION
        ctx.report_usage("token_credits", credits)
