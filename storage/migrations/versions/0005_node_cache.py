"""The output cache (SPEC §9): a ``node_cache`` table, and ``cached``/``saved_cost`` on node runs.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01

A new table and two added columns (a constant default, a nullable one): no existing row is
rewritten and no table is copied on SQLite; every node run written before reads as not cached.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("node_run", sa.Column("cached", sa.Boolean(), server_default=sa.false(), nullable=False))
    op.add_column("node_run", sa.Column("saved_cost", sa.Float(), nullable=True))
    op.create_table(
        "node_cache",
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("node_type", sa.String(128), nullable=False),
        sa.Column("output", sa.JSON(none_as_null=True), nullable=False),
        sa.Column("cost", sa.Float(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_hit", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_index("ix_node_cache_last_hit", "node_cache", ["last_hit"])


def downgrade() -> None:
    op.drop_index("ix_node_cache_last_hit", table_name="node_cache")
    op.drop_table("node_cache")
    with op.batch_alter_table("node_run") as batch:  # SQLite drops columns by copying the table
        batch.drop_column("saved_cost")
        batch.drop_column("cached")
