"""Persistence: sqlmodel tables, the engine and the repository. The only package that speaks SQL.

Typical use::

    engine = storage.create_engine("sqlite+aiosqlite:///./graph_runtime.db")
    await storage.create_schema(engine)
    repository = storage.Repository(engine)  # the whole store; a worker-only process: storage.WorkerStore
    ...
    await storage.dispose(engine)
"""

from storage.convert import ApiKeyRecord
from storage.engine import create_engine, create_schema, dispose
from storage.errors import DatabaseUrlError, StorageError
from storage.repository import ApiStore, Repository, WorkerStore

__all__ = [
    "ApiKeyRecord",
    "ApiStore",
    "DatabaseUrlError",
    "Repository",
    "StorageError",
    "WorkerStore",
    "create_engine",
    "create_schema",
    "dispose",
]
