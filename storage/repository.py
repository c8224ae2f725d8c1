"""The repository: the store of flows, tasks, node runs, keys and secrets on SQLite or PostgreSQL.

``Repository`` is :class:`storage.api_store.ApiStore` (everything, what ``serve`` builds); a process
that only runs tasks needs :class:`storage.task_store.WorkerStore`. Every call is one short
transaction; nothing returned holds a connection or a driver object.
"""

from __future__ import annotations

from storage.api_store import ApiStore
from storage.cancels import CANCELLED_BEFORE_START
from storage.convert import ApiKeyRecord
from storage.task_store import WorkerStore

__all__ = ["CANCELLED_BEFORE_START", "ApiKeyRecord", "ApiStore", "Repository", "WorkerStore"]

Repository = ApiStore
"""The whole store (kept under its old name: the API, the CLI and tests build it)."""
