"""What the client raises: one class per family of API errors, each carrying the server's ``code``,
``field`` and HTTP ``status`` (the body is ``{"error": {"code", "message", "field"}}``, SPEC §3)."""

from __future__ import annotations

from typing import Any


class ClientError(Exception):
    """The base of everything this package raises."""


class ApiError(ClientError):
    """The server answered with an error status.

    Attributes:
        status: the HTTP status (422, 404 …).
        code: the server's stable snake_case code (``invalid_settings``, ``task_not_found`` …).
        message: the server's message, meant for a person.
        field: the request field at fault as a dotted path (``node_settings.resize.width``), or None.
        body: the whole error object as sent (``problems``, ``missing`` … when the server adds them).
    """

    def __init__(self, status: int, code: str, message: str, field: str | None = None,
                 body: dict[str, Any] | None = None) -> None:
        super().__init__(f"{status} {code}: {message}" + (f" (field {field})" if field else ""))
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.body = body or {}


class InvalidRequest(ApiError):
    """400, 413, 415, 416: the request could not be read as sent (not JSON, too large …)."""


class ValidationError(InvalidRequest):
    """422: valid JSON that does not make sense; ``field`` names the part to fix."""


class Unauthorized(ApiError):
    """401: no valid key (missing, unknown or revoked)."""


class Forbidden(ApiError):
    """403: the key's scope does not allow this (an ``execute`` key changing flows or keys)."""


class NotFound(ApiError):
    """404: no such flow, revision, task, file or endpoint."""


class Conflict(ApiError):
    """409: the task already ended (``task_ended``) or an idempotency key was reused (``idempotency_conflict``)."""


class RateLimited(ApiError):
    """429 after the client's retries ran out."""


class Unavailable(ApiError):
    """503 (and 502/504) after the client's retries ran out: shutting down, store unavailable."""


class ServerError(ApiError):
    """Any other 5xx: a bug on the server (its log has the details)."""


class WaitTimedOut(ClientError, TimeoutError):
    """The task had not ended when the wait's ``timeout`` passed; ``task`` is how it was last seen."""

    def __init__(self, task: Any, timeout: float) -> None:
        super().__init__(f"task {task.id} still {task.status.value} after {timeout:g} s")
        self.task = task


class StreamError(ClientError):
    """The event stream could not be (re)opened or broke more often than the client retries."""


_BY_STATUS: dict[int, type[ApiError]] = {
    400: InvalidRequest, 413: InvalidRequest, 415: InvalidRequest, 416: InvalidRequest,
    422: ValidationError, 401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict,
    429: RateLimited, 502: Unavailable, 503: Unavailable, 504: Unavailable,
}


def from_response(status: int, body: Any) -> ApiError:
    """The typed error for an error answer; a body that is not our error JSON still gives its status."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        error = {"code": f"http_{status}", "message": str(body)[:500] if body else f"HTTP {status}"}
    cls = _BY_STATUS.get(status) or (ServerError if status >= 500 else ApiError)
    return cls(status, str(error.get("code", f"http_{status}")), str(error.get("message", "")), error.get("field"),
               error)
