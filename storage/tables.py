"""The database tables (sqlmodel), shared by SQLite and PostgreSQL.

The repository reads and writes them with SQLAlchemy Core statements on ``<Row>.__table__``;
the sqlmodel classes exist to declare the schema in one place, not to be loaded as objects.
"""

# No ``from __future__ import annotations``: sqlmodel reads these annotations at class creation.

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel

metadata = SQLModel.metadata


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime with microseconds, on every backend.

    PostgreSQL stores ``timestamptz``; SQLite stores the UTC wall time as text, so the zone is
    re-attached on read. A naive datetime is refused: it is a bug upstream, not "probably UTC".
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pass an aware UTC datetime")
        value = value.astimezone(UTC)
        # SQLite's DATETIME format has no zone; store the UTC wall time.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# Plain JSON, not JSONB: JSONB reorders object keys, and a task's result keeps its output order.
JSONValue = sa.JSON(none_as_null=True)

# BIGINT ids on PostgreSQL; SQLite only auto-increments a column declared exactly INTEGER.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _now_column(nullable: bool = False) -> Any:
    return Field(default=None, sa_type=UTCDateTime, nullable=nullable)


class FlowRow(SQLModel, table=True):
    """One flow id. ``latest_revision`` is 0 only inside the transaction that creates it."""

    __tablename__ = "flow"

    id: str = Field(primary_key=True, max_length=64)
    latest_revision: int = Field(default=0)
    deleted: bool = Field(default=False)
    created: datetime = _now_column()
    updated: datetime = _now_column()


class FlowRevisionRow(SQLModel, table=True):
    """An immutable definition of a flow; revisions are never deleted (old tasks refer to them)."""

    __tablename__ = "flow_revision"

    flow_id: str = Field(primary_key=True, foreign_key="flow.id", max_length=64)
    revision: int = Field(primary_key=True)
    definition: dict[str, Any] = Field(sa_type=JSONValue, nullable=False)
    digest: str = Field(max_length=64)
    created: datetime = _now_column()


class TaskRow(SQLModel, table=True):
    """One task. ``data`` is Scade's request echo (``TaskRequest.as_data()``)."""

    __tablename__ = "task"
    __table_args__ = (
        sa.ForeignKeyConstraint(["flow_id", "revision"], ["flow_revision.flow_id", "flow_revision.revision"]),
        sa.UniqueConstraint("flow_id", "idempotency_key", name="uq_task_flow_idempotency_key"),
        # The queue (oldest queued first) and the history filters (newest first).
        sa.Index("ix_task_status_id", "status", "id"),
        sa.Index("ix_task_flow_id_id", "flow_id", "id"),
        # A task's children (subflows, map items run as flows), newest first: GET /tasks?parent_id=.
        sa.Index("ix_task_parent_id_id", "parent_id", "id"),
        # Tasks parked for a pool (SPEC §10), found by a claimer serving it; only those are indexed.
        sa.Index("ix_task_pool_id", "pool", "id", postgresql_where=sa.text("pool IS NOT NULL"),
                 sqlite_where=sa.text("pool IS NOT NULL")),
        # Ids are never reused, even if the newest task were ever deleted.
        {"sqlite_autoincrement": True},
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=BigId)
    flow_id: str = Field(max_length=64)
    revision: int
    status: str = Field(max_length=16)
    data: dict[str, Any] = Field(sa_type=JSONValue, nullable=False)
    created: datetime = _now_column()
    started: datetime | None = _now_column(nullable=True)
    finished: datetime | None = _now_column(nullable=True)
    result: dict[str, Any] | None = Field(default=None, sa_type=JSONValue)
    execution_time: float | None = None
    execution_cost: float | None = None
    error: dict[str, Any] | None = Field(default=None, sa_type=JSONValue)
    cancel_requested: bool = Field(default=False)
    # How many times a worker took it: 1 on a first run, more once resumed after a crash.
    claims: int = Field(default=0)
    # How many times its worker died (or lost its lease) while running it: the second time, the
    # task ends `crashed` instead of taking down process after process.
    interruptions: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    # `prod` or `dev` (SPEC §7 Modes): which value of each secret its nodes get.
    mode: str = Field(default="prod", max_length=8, sa_column_kwargs={"server_default": "prod"})
    # Which worker runs it and until when, renewed by its heartbeat; an expired lease means the
    # worker died and the task goes back to the queue.
    lease_owner: str | None = Field(default=None, max_length=128)
    lease_expires: datetime | None = _now_column(nullable=True)
    idempotency_key: str | None = None
    request_fingerprint: str | None = None
    key_id: str | None = None
    # The task whose subflow or map node started this one (Scade's field; SPEC §9).
    parent_id: int | None = Field(default=None, sa_type=BigId)
    # The pool a parked task waits for (SPEC §10): running, no lease, until a worker serving it
    # claims it. Null otherwise.
    pool: str | None = Field(default=None, max_length=40)
    # PostgreSQL: the process waiting for its end (its worker id; "*": several), told by an end
    # notice unless it ends the task itself (storage.wakeups.PgEndings). Null otherwise, and on SQLite.
    watcher: str | None = Field(default=None, max_length=128)


class NodeRunRow(SQLModel, table=True):
    """One node inside a task."""

    __tablename__ = "node_run"

    task_id: int = Field(primary_key=True, sa_type=BigId, foreign_key="task.id", ondelete="CASCADE")
    # A flow node's id (≤ 64), or a map item's: the map node's id and ``[index]``. SQLite does not
    # enforce lengths, so only PostgreSQL's column was widened (migration 0006, no table copy).
    node_id: str = Field(primary_key=True, sa_type=sa.String(64).with_variant(sa.String(80), "postgresql"))
    status: str = Field(max_length=16)
    started: datetime | None = _now_column(nullable=True)
    finished: datetime | None = _now_column(nullable=True)
    execution_time: float | None = None
    cost: float | None = None
    attempts: int = Field(default=0)
    error: dict[str, Any] | None = Field(default=None, sa_type=JSONValue)
    output: dict[str, Any] | None = Field(default=None, sa_type=JSONValue)
    # Served from the output cache (SPEC §9); saved_cost: what the run that filled it cost.
    cached: bool = Field(default=False, sa_column_kwargs={"server_default": sa.false()})
    saved_cost: float | None = None
    # A map node's item counts by status (SPEC §9): shown in place of its item runs.
    items: dict[str, Any] | None = Field(default=None, sa_type=JSONValue)
    # Pending until a worker of this pool takes the task (SPEC §10); cleared when it starts.
    waiting_for_pool: str | None = Field(default=None, max_length=40)


class ApiKeyRow(SQLModel, table=True):
    """A server key: only a hash of its secret is stored. ``revoked`` is when it was revoked."""

    __tablename__ = "api_key"

    id: str = Field(primary_key=True, max_length=64)
    name: str
    scope: str = Field(max_length=16)
    secret_hash: str
    created: datetime = _now_column()
    last_used: datetime | None = _now_column(nullable=True)
    revoked: datetime | None = _now_column(nullable=True)


class SecretRow(SQLModel, table=True):
    """One value of a secret for one mode, AES-GCM encrypted (``storage.secrets``); never plaintext."""

    __tablename__ = "secret"

    name: str = Field(primary_key=True, max_length=64)
    mode: str = Field(primary_key=True, max_length=8)
    nonce: bytes = Field(sa_type=sa.LargeBinary, nullable=False)
    ciphertext: bytes = Field(sa_type=sa.LargeBinary, nullable=False)
    created: datetime = _now_column()
    updated: datetime = _now_column()


class FileRow(SQLModel, table=True):
    """A stored file's record (SPEC §7); its bytes are the blob named by ``sha256`` in the file store.

    Several records may share one blob (equal bytes are stored once). ``used`` turns true once a
    task references the file: an upload never used is deleted after a day.
    """

    __tablename__ = "file"
    __table_args__ = (
        sa.Index("ix_file_sha256", "sha256"),
        sa.Index("ix_file_created", "created"),
    )

    id: str = Field(primary_key=True, max_length=64)
    sha256: str = Field(max_length=64)
    size: int = Field(sa_type=sa.BigInteger())
    name: str = Field(max_length=255)
    content_type: str = Field(max_length=255)
    created: datetime = _now_column()
    used: bool = Field(default=False)


class NodeCacheRow(SQLModel, table=True):
    """One entry of the output cache (SPEC §9): a deterministic node's output under its key.

    ``size`` is the output's JSON length in bytes; the cache is kept under ``CACHE_MAX_BYTES`` by
    deleting the entries with the oldest ``last_hit`` first.
    """

    __tablename__ = "node_cache"
    __table_args__ = (sa.Index("ix_node_cache_last_hit", "last_hit"),)

    key: str = Field(primary_key=True, max_length=64)
    node_type: str = Field(max_length=128)
    output: dict[str, Any] = Field(sa_type=JSONValue, nullable=False)
    cost: float = Field(default=0.0)
    size: int = Field(sa_type=sa.BigInteger())
    created: datetime = _now_column()
    last_hit: datetime = _now_column()


class TaskEventBatchRow(SQLModel, table=True):
    """Events of a task (SPEC §11), as subscribers got them, stored together: those one commit wrote.

    ``seq`` is the number of its first event on the task's stream and ``last_seq`` of its last (one
    writer per task at a time, the worker holding its lease, numbers them 1, 2, … with no gap, so
    ``Last-Event-ID`` resumes exactly); ``events`` is ``[[seq, kind, data], …]`` (a task's or node
    run's data an array by position, ``storage.event_data``; rows written before 2026-12 hold
    ``[seq, kind, at, data]`` and read the same); ``final``: its
    last event is the task event of its end. A 10-node chain's 22 events are most often one row,
    written with the task's end (one row per event made a short chain a fifth slower).
    """

    __tablename__ = "task_event_batch"

    task_id: int = Field(primary_key=True, sa_type=BigId, foreign_key="task.id", ondelete="CASCADE")
    seq: int = Field(primary_key=True)
    last_seq: int
    final: bool = Field(default=False)
    events: list[Any] = Field(sa_type=JSONValue, nullable=False)


flow = FlowRow.__table__
flow_revision = FlowRevisionRow.__table__
task = TaskRow.__table__
node_run = NodeRunRow.__table__
api_key = ApiKeyRow.__table__
file = FileRow.__table__
secret = SecretRow.__table__
node_cache = NodeCacheRow.__table__
task_event_batch = TaskEventBatchRow.__table__
