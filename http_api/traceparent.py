"""A caller's W3C ``traceparent``, carried from the execute request into the task it queues.

The header is kept with the task (``TaskRequest.traceparent``, in the task's ``data``), so whichever
process runs the task continues the caller's trace: the one that took the request, or a worker
process behind ``serve --workers 0``. Reading it needs no OpenTelemetry: an API process without
the ``otel`` extra still stores it for a worker that has it.
"""

from __future__ import annotations

import contextvars
import re
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Version 00's layout (W3C Trace Context §3.2): a later version's first four fields read the same way,
# so its header is kept as those fields; version ff, an all-zero trace or parent id is invalid.
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_ZERO_TRACE, _ZERO_SPAN = "0" * 32, "0" * 16

_CALLER: contextvars.ContextVar[str | None] = contextvars.ContextVar("graph_runtime_traceparent", default=None)


def parse(header: str | None) -> str | None:
    """The header as version 00 if it is a valid ``traceparent``, else None (an invalid one starts a new trace)."""
    if header is None:
        return None
    found = _TRACEPARENT.fullmatch(header.strip())
    if found is None:
        return None
    version, trace_id, span_id, flags, rest = found.groups()
    if version == "ff" or (version == "00" and rest) or trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    return f"00-{trace_id}-{span_id}-{flags}"


def caller() -> str | None:
    """The ``traceparent`` of the request being handled, if it sent a valid one."""
    return _CALLER.get()


def middleware(current: Callable[[], str | None] | None = None) -> Middleware:
    """Keeps a request's valid ``traceparent`` where :func:`caller` reads it, while it is handled.

    ``current``: this process's own span around the request, preferred when there is one (an
    OpenTelemetry instrumentation's server span, itself a child of the caller's).
    """

    @web.middleware
    async def keep_traceparent(request: web.Request, handler: Handler) -> web.StreamResponse:
        header = (current() if current is not None else None) or parse(request.headers.get("traceparent"))
        if header is None:
            return await handler(request)
        token = _CALLER.set(header)
        try:
            return await handler(request)
        finally:
            _CALLER.reset(token)

    return keep_traceparent
