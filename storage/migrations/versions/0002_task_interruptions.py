"""task.interruptions: how many times a task's worker died while running it.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30

Existing tasks get 0 (the server default), which is what a task nobody has interrupted has.
SQLite and PostgreSQL both add a NOT NULL column with a default in place (no table copy).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("task", sa.Column("interruptions", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    op.drop_column("task", "interruptions")
