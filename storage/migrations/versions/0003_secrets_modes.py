"""Secrets (encrypted, one value per mode) and the mode a task runs in.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01

``secret`` holds AES-GCM ciphertexts only (the nonce beside each); the key is derived from the
server's master key, never stored here. ``task.mode`` is ``prod`` for every existing task (the
server default), which is the mode they ran in. Both are additions: no table copy on SQLite.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "secret",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("mode", sa.String(8), nullable=False),
        sa.Column("nonce", sa.LargeBinary(), nullable=False),
        sa.Column("ciphertext", sa.LargeBinary(), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", "mode"),
    )
    op.add_column("task", sa.Column("mode", sa.String(8), nullable=False, server_default="prod"))


def downgrade() -> None:
    op.drop_column("task", "mode")
    op.drop_table("secret")
