"""Errors of graph-runtime, rooted in :class:`GraphRuntimeError`.

Each class has a stable snake_case ``code`` (the wire value in task and HTTP errors) and its
docstring's first line is its default message. ``retryable`` says whether the executor may try
a node again after this failure (SPEC §4).
"""

from __future__ import annotations


class GraphRuntimeError(Exception):
    """Something went wrong inside graph-runtime."""

    code = "internal"
    retryable = False

    def __init__(
        self,
        message: str | None = None,
        *,
        node_id: str | None = None,
        field: str | None = None,
    ) -> None:
        doc = (type(self).__doc__ or "").strip().splitlines()
        self.message = message or (doc[0] if doc else self.code)
        self.node_id = node_id
        self.field = field
        super().__init__(self.message)

    def as_dict(self) -> dict[str, str | None]:
        """The ``{node_id, code, message}`` object stored on a failed task or node."""
        return {"node_id": self.node_id, "code": self.code, "message": self.message}


class NodeFailed(GraphRuntimeError):
    """The node failed."""

    code = "node_failed"


class GuardFailed(NodeFailed):
    """The guard's condition was false."""

    code = "guard_failed"


class InvalidParams(NodeFailed):
    """The node's parameters are not valid for its type."""

    code = "invalid_params"


class NodeTimeout(NodeFailed):
    """The node ran longer than its timeout_s."""

    code = "node_timeout"
    retryable = True


class ConnectionFailed(NodeFailed):
    """The node could not connect to the remote service."""

    code = "connection_error"
    retryable = True


class HttpStatusError(NodeFailed):
    """The remote service answered with an unexpected HTTP status."""

    code = "http_status"

    def __init__(self, message: str | None = None, *, status: int, **kwargs: str | None) -> None:
        super().__init__(message, **kwargs)
        self.status = status
        # Server errors and rate limits are transient; other 4xx mean the request is wrong.
        self.retryable = status >= 500 or status == 429


class SsrfBlocked(NodeFailed):
    """The address is private, loopback or reserved and HTTP_ALLOW_PRIVATE is off."""

    code = "ssrf_blocked"


class OutputTooLarge(NodeFailed):
    """The node's output is larger than MAX_OUTPUT_BYTES; move big data as files."""

    code = "output_too_large"


class InvalidInput(NodeFailed):
    """The node's input is not what it can work on (not an image, truncated media, a decompression bomb)."""

    code = "invalid_input"


class StorageFull(NodeFailed):
    """The file store is full; nothing was kept."""

    code = "storage_full"


class UnexpectedError(NodeFailed):
    """The node raised an unexpected exception."""

    code = "internal"
    retryable = True


class UnknownNodeType(GraphRuntimeError):
    """No node type is registered under this name."""

    code = "unknown_node_type"


class DuplicateNodeType(GraphRuntimeError):
    """A node type is already registered under this name."""

    code = "duplicate_node_type"
