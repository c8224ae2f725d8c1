"""Files (SPEC §7): one record per stored file; the bytes are content-addressed blobs on disk.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01

A new table only: no existing row changes, no table copy on SQLite.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "file",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("content_type", sa.String(255), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_file_sha256", "file", ["sha256"])
    op.create_index("ix_file_created", "file", ["created"])


def downgrade() -> None:
    op.drop_index("ix_file_created", table_name="file")
    op.drop_index("ix_file_sha256", table_name="file")
    op.drop_table("file")
