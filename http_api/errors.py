"""Errors of the HTTP layer, and the one place where every error becomes an HTTP status."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage

from graph_runtime import errors as flow_errors
from http_api import redaction
from nodes import codec
from nodes.errors import GraphRuntimeError, StorageFull, UnknownNodeType

log = logging.getLogger(__name__)


class BodyNotJson(GraphRuntimeError):
    """The request body is not valid JSON."""

    code = "invalid_json"


class BodyUnreadable(BodyNotJson):
    """The request body could not be read (e.g. a broken Content-Encoding); the connection closes."""


class BodyNotObject(GraphRuntimeError):
    """The request body must be a JSON object."""

    code = "body_not_object"


class UnsupportedMediaType(GraphRuntimeError):
    """Send the body as JSON with Content-Type: application/json."""

    code = "unsupported_media_type"


class BodyTooLarge(GraphRuntimeError):
    """The request body is larger than the server accepts."""

    code = "body_too_large"


class UnsupportedEncoding(GraphRuntimeError):
    """Send the body as is, or with Content-Encoding: gzip or deflate."""

    code = "unsupported_encoding"


class BodyTimeout(GraphRuntimeError):
    """The request body did not arrive in time (GRAPH_RUNTIME_BODY_TIMEOUT_S); the connection closes."""

    code = "body_timeout"


class ClientDisconnected(GraphRuntimeError):
    """The client closed the connection before its request was read; nobody is left to answer."""

    code = "client_disconnected"


class Unauthenticated(GraphRuntimeError):
    """A valid server key is required: send Authorization: Basic <key>."""

    code = "unauthorized"


class Forbidden(GraphRuntimeError):
    """This key's scope does not allow this request; use an admin key."""

    code = "forbidden"


class RequestInvalid(GraphRuntimeError):
    """The request does not make sense."""

    code = "invalid_request"


class RouteNotFound(GraphRuntimeError):
    """No such endpoint; everything lives under /api/v1."""

    code = "not_found"


class MethodNotAllowed(GraphRuntimeError):
    """This endpoint does not accept this method."""

    code = "method_not_allowed"


class ShuttingDown(GraphRuntimeError):
    """The server is shutting down; retry on another instance or shortly."""

    code = "shutting_down"


class _MalformedRequestsAreWarnings(logging.Filter):
    """aiohttp answers a malformed request (a NUL in a header…) with 400 itself, then logs it as
    an ERROR with a traceback: any client could fill the log with those. Keep it, as a warning."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, BadHttpMessage):
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.msg, record.args, record.exc_info = f"malformed request refused: {exc.message}", (), None
        return True


_QUIET_FILTER = _MalformedRequestsAreWarnings()


def quiet_malformed_requests() -> None:
    """Malformed requests become one warning each, and no aiohttp log line shows a server key."""
    logging.getLogger("aiohttp.server").addFilter(_QUIET_FILTER)  # a no-op when already added
    redaction.protect_aiohttp_loggers()  # after the quiet filter: the warning it writes quotes the request


# Walked along each exception's MRO: the most specific class listed wins.
STATUS_BY_ERROR: dict[type[BaseException], int] = {
    BodyNotJson: 400,
    BodyNotObject: 400,
    Unauthenticated: 401,
    Forbidden: 403,
    flow_errors.NotFound: 404,
    RouteNotFound: 404,
    MethodNotAllowed: 405,
    flow_errors.IdempotencyConflict: 409,
    flow_errors.TaskEnded: 409,
    BodyTimeout: 408,
    BodyTooLarge: 413,
    UnsupportedMediaType: 415,
    UnsupportedEncoding: 415,
    RequestInvalid: 422,
    flow_errors.FlowInvalid: 422,
    flow_errors.SelectionError: 422,
    flow_errors.InvalidSettings: 422,
    UnknownNodeType: 422,
    # nginx's "client closed request": only the access log sees it, as no one is left to read it.
    ClientDisconnected: 499,
    flow_errors.StoreUnavailable: 503,
    ShuttingDown: 503,
    StorageFull: 507,  # the file store's disk is full (WebDAV's Insufficient Storage)
}
# The request's framing is lost (or its client gone): answer, then close instead of reading on.
CLOSES_CONNECTION = (BodyUnreadable, BodyTimeout, ClientDisconnected)


def status_for(exc: BaseException) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls]
    return 500


def error_response(status: int, code: str, message: str, field: str | None = None,
                   extra: dict[str, object] | None = None) -> web.Response:
    body: dict[str, object] = {"code": code, "message": message, "field": field}
    if extra:
        body.update(extra)
    headers = {"WWW-Authenticate": 'Basic realm="graph-runtime"'} if status == 401 else {}
    if status == 503:
        headers["Retry-After"] = "1"
    return web.Response(status=status, body=codec.dumps({"error": body}),
                        content_type="application/json", headers=headers)


def _from_aiohttp(exc: web.HTTPException) -> web.Response:
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return error_response(413, BodyTooLarge.code, "the request body is larger than the server accepts "
                              f"({exc.text or 'see GRAPH_RUNTIME_MAX_BODY_BYTES'})")
    if isinstance(exc, web.HTTPNotFound):
        return error_response(404, RouteNotFound.code, RouteNotFound().message)
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        response = error_response(405, MethodNotAllowed.code, f"{exc.method} is not allowed here; allowed: {allowed}")
        response.headers["Allow"] = allowed
        return response
    return error_response(exc.status, "http_error", exc.reason)


def _details(exc: GraphRuntimeError) -> dict[str, object] | None:
    """Structured detail beside the message: every flow problem, every missing input."""
    if isinstance(exc, flow_errors.FlowInvalid):
        return {"problems": exc.problems}
    if isinstance(exc, flow_errors.MissingInputs):
        return {"missing": [{"node_id": n, "input": i, "from": u} for n, i, u in exc.missing]}
    return None


@web.middleware
async def error_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Turn every exception into ``{"error": {code, message, field}}``; a 500 never shows a trace."""
    try:
        return await handler(request)
    except GraphRuntimeError as exc:
        status = status_for(exc)
        if status == 507:  # the operator's problem, not a bug: no traceback
            log.warning("%s %s: %s", request.method, request.path, exc.message,
                        extra={"action": exc.code, "path": request.path})
        elif status >= 500 and status != 503:
            log.exception("request failed", extra={"action": "request_failed", "path": request.path})
        elif isinstance(exc, (ClientDisconnected, BodyTimeout)):
            log.info("%s %s: %s", request.method, request.path, exc.message,
                     extra={"action": exc.code, "path": request.path})
        response = error_response(status, exc.code, exc.message, exc.field, _details(exc))
        if isinstance(exc, CLOSES_CONNECTION):
            response.force_close()
        return response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _from_aiohttp(exc)
    except Exception:
        log.exception("unexpected error", extra={"action": "request_failed", "path": request.path})
        return error_response(500, "internal", "internal server error; the server log has the details")
