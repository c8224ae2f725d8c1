"""Subflows and maps (SPEC §9): ``task.parent_id``, a map node's ``items`` summary, longer node-run ids.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02

``parent_id`` names the task whose ``subflow`` or ``map`` node started this one (Scade's field,
null before); indexed with ``id`` for ``GET /tasks?parent_id=`` newest first. ``node_run.items``
holds a map node's item counts. Item runs are stored as node runs named ``map1[3]``: their id
is a node id (up to 64 characters) plus the index, so the column grows to 80 on PostgreSQL
(SQLite does not enforce lengths). Added columns are nullable: no existing row is rewritten.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("task", sa.Column("parent_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True))
    op.create_index("ix_task_parent_id_id", "task", ["parent_id", "id"])
    op.add_column("node_run", sa.Column("items", sa.JSON(none_as_null=True), nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column("node_run", "node_id", type_=sa.String(80), existing_type=sa.String(64), existing_nullable=False)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DELETE FROM node_run WHERE length(node_id) > 64")
        op.alter_column("node_run", "node_id", type_=sa.String(64), existing_type=sa.String(80), existing_nullable=False)
    # Plain DROP COLUMN (SQLite 3.35+): a batch copy would lose the task table's AUTOINCREMENT.
    op.drop_column("node_run", "items")
    op.drop_index("ix_task_parent_id_id", table_name="task")
    op.drop_column("task", "parent_id")
