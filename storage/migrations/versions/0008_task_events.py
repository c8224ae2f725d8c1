"""Task events (SPEC §11): ``task_event`` keeps every event of a task's stream, so a late
subscriber gets the whole history and ``Last-Event-ID`` resumes with no gap.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04

Keyed by ``(task_id, seq)``: reading a task's events after a number is one index range, and a
worker that lost its lease cannot write a number another worker wrote (the insert ignores it).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "task_event",
        sa.Column("task_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                  sa.ForeignKey("task.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("seq", sa.Integer(), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("data", sa.JSON(none_as_null=True), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("final", sa.Boolean(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("task_event")
