"""Persistence: sqlmodel tables, the engine and the repository. The only package that speaks SQL.

Typical use::

    engine = storage.create_engine("sqlite+aiosqlite:///./graph_runtime.db")
    await storage.create_schema(engine)
    repository = storage.Repository(engine)
    ...
    await storage.dispose(engine)
"""

from storage.convert import ApiKeyRecord
from storage.engine import create_engine, create_schema, dispose
from storage.errors import DatabaseUrlError, StorageError
from storage.repository import Repository

__all__ = [
    "ApiKeyRecord",
    "DatabaseUrlError",
    "Repository",
    "StorageError",
    "create_engine",
    "create_schema",
    "dispose",
]
