"""A Python client for a graph-runtime server, sync (:class:`Client`) and async (:class:`AsyncClient`).

It imports nothing of the server (only aiohttp and the standard library), so it stays light and
can be split into its own distribution without a change (``tests/test_architecture.py`` keeps it so).
"""

from graph_runtime_client.async_client import AsyncClient
from graph_runtime_client.errors import (
    ApiError,
    ClientError,
    Conflict,
    Forbidden,
    InvalidRequest,
    NotFound,
    RateLimited,
    ServerError,
    StreamError,
    Unauthorized,
    Unavailable,
    ValidationError,
    WaitTimedOut,
)
from graph_runtime_client.models import Error, Event, File, NodeRun, Plan, Task, TaskPage, TaskStatus
from graph_runtime_client.sync_client import Client

__all__ = [
    "ApiError", "AsyncClient", "Client", "ClientError", "Conflict", "Error", "Event", "File", "Forbidden",
    "InvalidRequest", "NodeRun", "NotFound", "Plan", "RateLimited", "ServerError", "StreamError", "Task",
    "TaskPage", "TaskStatus", "Unauthorized", "Unavailable", "ValidationError", "WaitTimedOut",
]
