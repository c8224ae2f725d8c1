"""The schema's versions: alembic revisions in ``versions/``, run in code (no alembic.ini).

Each function takes a synchronous SQLAlchemy connection (``AsyncConnection.run_sync``) that is
already inside the transaction :func:`storage.engine.create_schema` holds, so alembic commits
nothing itself and one process at a time decides and applies an upgrade.

A database made before the schema was versioned has the first release's tables and no
``alembic_version`` table: it is stamped at :data:`FIRST_RELEASE`, then upgraded like any other.

A schema change is a new file in ``versions/`` (``down_revision`` = the latest; ids are 0001, 0002…),
e.g. from ``script.py.mako`` with ``alembic.command.revision(migrations.config(), "what", rev_id="0003")``.
A released revision is never edited: databases out there are stamped with it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError

from storage.errors import SchemaTooNew, SchemaUnknown

FIRST_RELEASE = "0001"
"""The revision of the schema every release made before versioning (``metadata.create_all``)."""


@dataclass(frozen=True)
class SchemaVersions:
    """Where a database's schema is (``None``: no schema yet) and where this code's schema is."""

    database: str | None
    code: str

    @property
    def current(self) -> bool:
        return self.database == self.code

    def describe(self) -> str:
        """``0001 -> 0002``, ``none -> 0002`` or ``0002 (current)``."""
        return f"{self.code} (current)" if self.current else f"{self.database or 'none'} -> {self.code}"


def config(connection: sa.Connection | None = None) -> Config:
    """Alembic's configuration, built in code: the scripts are this package, the connection is given."""
    cfg = Config()
    cfg.set_main_option("script_location", "storage:migrations")
    cfg.attributes["connection"] = connection
    return cfg


@functools.cache
def head() -> str:
    """This code's schema revision (read from the scripts once per process)."""
    found = ScriptDirectory.from_config(config()).get_current_head()
    assert found is not None, "no revision in storage/migrations/versions"
    return found


def versions(connection: sa.Connection) -> SchemaVersions:
    """The database's revision and the code's head.

    Raises:
        SchemaTooNew: the database's revision is not one of this code's (a newer release wrote it).
        SchemaUnknown: tables are there but neither versioned nor the first release's.
    """
    script = ScriptDirectory.from_config(config())
    head = script.get_current_head()
    assert head is not None, "no revision in storage/migrations/versions"
    database = MigrationContext.configure(connection).get_current_revision()
    if database is None:
        return SchemaVersions(_unversioned(connection), head)
    try:
        script.get_revision(database)
    except CommandError:
        raise SchemaTooNew(
            f"the database's schema is at version {database}, which this graph-runtime does not know (it "
            f"knows up to {head}): a newer release wrote it; run that release or a newer one"
        ) from None
    return SchemaVersions(database, head)


def upgrade(connection: sa.Connection) -> SchemaVersions:
    """Bring the schema to this code's head; returns where it was and where it is now."""
    found = versions(connection)
    cfg = config(connection)
    if found.database == FIRST_RELEASE and not _has_version_table(connection):
        command.stamp(cfg, FIRST_RELEASE)
    if not found.current:
        command.upgrade(cfg, "head")
    return found


def _has_version_table(connection: sa.Connection) -> bool:
    return sa.inspect(connection).has_table("alembic_version")


# A table and the columns of the first release that prove a database is one (checked before stamping).
_FIRST_RELEASE_SHAPE = {
    "flow": {"id", "latest_revision", "deleted", "created", "updated"},
    "flow_revision": {"flow_id", "revision", "definition", "digest", "created"},
    "task": {"id", "flow_id", "revision", "status", "data", "created", "started", "finished", "result",
             "execution_time", "execution_cost", "error", "cancel_requested", "claims", "lease_owner",
             "lease_expires", "idempotency_key", "request_fingerprint", "key_id"},
    "node_run": {"task_id", "node_id", "status", "started", "finished", "execution_time", "cost", "attempts",
                 "error", "output"},
    "api_key": {"id", "name", "scope", "secret_hash", "created", "last_used", "revoked"},
}


def _unversioned(connection: sa.Connection) -> str | None:
    """None for an empty database, FIRST_RELEASE for the first release's tables, else SchemaUnknown."""
    inspector = sa.inspect(connection)
    present = set(inspector.get_table_names()) & set(_FIRST_RELEASE_SHAPE)
    if not present:
        return None
    missing = [f"table {table}" for table in sorted(set(_FIRST_RELEASE_SHAPE) - present)]
    for table in sorted(present):
        columns = _FIRST_RELEASE_SHAPE[table] - {column["name"] for column in inspector.get_columns(table)}
        missing += [f"{table}.{column}" for column in sorted(columns)]
    if missing:
        raise SchemaUnknown(
            "the database has graph-runtime tables but no schema version, and they are not the first "
            f"release's (missing {', '.join(missing[:5])}{'…' if len(missing) > 5 else ''}): a development "
            "build made it; start from an empty database"
        )
    return FIRST_RELEASE
