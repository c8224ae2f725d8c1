"""Storage errors, and the one place SQLAlchemy's exceptions become ours.

Nothing above ``storage`` sees a SQLAlchemy or driver type: a busy, locked or unreachable
database is :class:`graph_runtime.errors.StoreUnavailable` (worth retrying), a value the
tables cannot store (a naive datetime, an output that is not JSON) is the ``ValueError`` or
``TypeError`` that refused it, anything else unexpected is :class:`StorageError`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import exc as sa_exc

from graph_runtime import errors
from nodes.errors import GraphRuntimeError


class DatabaseUrlError(GraphRuntimeError, ValueError):
    """The database URL is not supported, or its driver is not installed."""

    code = "invalid_database_url"


class StorageError(GraphRuntimeError):
    """The database refused an operation."""

    code = "internal"


class IntegrityViolation(StorageError):
    """A statement broke a constraint (the hot path's caller knows which one it can break)."""


class SchemaTooNew(StorageError):
    """The database's schema is newer than this graph-runtime: run the release that wrote it, or a newer one."""

    code = "schema_too_new"


class SchemaNotCurrent(errors.StoreUnavailable):
    """The database's schema is not the one this process's code uses (another release upgraded
    it, or an upgrade is under way): this process cannot serve it (``/healthz`` answers 503)."""

    code = "schema_not_current"


class SchemaUnknown(StorageError):
    """The database has tables that are not a schema any graph-runtime release made."""

    code = "schema_unknown"


# Errors that say "the database is there but cannot serve us now": locked, refused, dropped.
_UNAVAILABLE = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.DisconnectionError,
    sa_exc.TimeoutError,  # no pooled connection came free in time
    OSError,  # refused, reset or timed out (TimeoutError) before the driver wrapped it
)


# PostgreSQL's SQLSTATEs for a server that is there but cannot serve now: a connection exception
# (class 08), shutting down or starting up (57P01-57P03: "the database system is shutting down"
# is 57P03), too many connections (53300). Retried like a refused connection, never a task failure.
_UNAVAILABLE_SQLSTATES = ("08", "57P01", "57P02", "57P03", "53300")

# SQLite reports schema mistakes as OperationalError too; retrying will not fix those.
SCHEMA_MISTAKES = ("no such table", "no such column", "syntax error", "has no column")


def unavailable_sqlstate(exc: BaseException) -> bool:
    """Whether a PostgreSQL error's SQLSTATE says the server cannot serve now (see above)."""
    return str(getattr(exc, "sqlstate", None) or "").startswith(_UNAVAILABLE_SQLSTATES)


def translate(exc: BaseException) -> GraphRuntimeError:
    """The graph-runtime error for a SQLAlchemy or driver exception."""
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return errors.StoreUnavailable(f"the database connection was lost: {_first_line(exc)}")
    if unavailable_sqlstate(getattr(exc, "orig", exc)):
        return errors.StoreUnavailable(f"the database is unavailable: {_first_line(exc)}")
    if any(mistake in _first_line(exc) for mistake in SCHEMA_MISTAKES):
        return StorageError(f"database error (is the schema created?): {_first_line(exc)}")
    if isinstance(exc, _UNAVAILABLE):
        return errors.StoreUnavailable(f"the database is unavailable: {_first_line(exc)}")
    return StorageError(f"database error: {_first_line(exc)}")


@asynccontextmanager
async def translated() -> AsyncIterator[None]:
    """Re-raise SQLAlchemy and connection errors raised inside the block as ours."""
    try:
        yield
    except sa_exc.StatementError as exc:
        if not isinstance(exc, sa_exc.DBAPIError) and isinstance(exc.orig, (TypeError, ValueError)):
            # Our own bind processing refused a value (a naive datetime, an output that is not
            # JSON): the caller's bug, raised as itself rather than as a database error.
            raise exc.orig from None
        raise translate(exc) from exc
    except (sa_exc.SQLAlchemyError, *_UNAVAILABLE) as exc:
        raise translate(exc) from exc


def _first_line(exc: BaseException) -> str:
    # SQLAlchemy appends the SQL and a docs link; the first line of the driver's message is enough.
    if isinstance(exc, sa_exc.DBAPIError) and exc.orig is not None:
        exc = exc.orig
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
