"""The first release's schema, as its ``metadata.create_all`` made it (before versioning).

Revision ID: 0001
Revises:
Create Date: 2026-11-30

Written out table by table (not from ``storage.tables``, which moves on): a database made by
that release is stamped at this revision, so this must stay exactly what it created. SQLite gets
INTEGER for the BIGINT ids (it only auto-increments a column declared exactly INTEGER).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _when(name: str, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "flow",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("latest_revision", sa.Integer(), nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        _when("created", nullable=False),
        _when("updated", nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "api_key",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("secret_hash", sa.String(), nullable=False),
        _when("created", nullable=False),
        _when("last_used"),
        _when("revoked"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "flow_revision",
        sa.Column("flow_id", sa.String(64), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("definition", sa.JSON(), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        _when("created", nullable=False),
        sa.ForeignKeyConstraint(["flow_id"], ["flow.id"]),
        sa.PrimaryKeyConstraint("flow_id", "revision"),
    )
    _create_task()
    op.create_table(
        "node_run",
        sa.Column("task_id", BigId, nullable=False),
        sa.Column("node_id", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        _when("started"),
        _when("finished"),
        sa.Column("execution_time", sa.Float(), nullable=True),
        sa.Column("cost", sa.Float(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.JSON(), nullable=True),
        sa.Column("output", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(["task_id"], ["task.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("task_id", "node_id"),
    )


def _create_task() -> None:
    op.create_table(
        "task",
        sa.Column("id", BigId, nullable=False, autoincrement=True),
        sa.Column("flow_id", sa.String(64), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        _when("created", nullable=False),
        _when("started"),
        _when("finished"),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("execution_time", sa.Float(), nullable=True),
        sa.Column("execution_cost", sa.Float(), nullable=True),
        sa.Column("error", sa.JSON(), nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("claims", sa.Integer(), nullable=False),
        sa.Column("lease_owner", sa.String(128), nullable=True),
        _when("lease_expires"),
        sa.Column("idempotency_key", sa.String(), nullable=True),
        sa.Column("request_fingerprint", sa.String(), nullable=True),
        sa.Column("key_id", sa.String(), nullable=True),
        sa.ForeignKeyConstraint(["flow_id", "revision"], ["flow_revision.flow_id", "flow_revision.revision"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("flow_id", "idempotency_key", name="uq_task_flow_idempotency_key"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_task_flow_id_id", "task", ["flow_id", "id"])
    op.create_index("ix_task_status_id", "task", ["status", "id"])


def downgrade() -> None:
    for table in ("node_run", "task", "flow_revision", "api_key", "flow"):
        op.drop_table(table)
