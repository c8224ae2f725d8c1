"""Pools (SPEC §10): ``task.pool`` for a task parked until a worker of that pool takes it, and
``node_run.waiting_for_pool`` for the node that waits.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03

A parked task stays ``running`` with no lease; a claimer serving the pool finds it through a
partial index on ``(pool, id)`` holding only parked tasks (a handful at most), so the claim's
queued half keeps using ``ix_task_status_id`` and the index costs nothing to the rest. Both
columns are nullable: no existing row is rewritten and no table is copied on SQLite.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PARKED = sa.text("pool IS NOT NULL")


def upgrade() -> None:
    op.add_column("task", sa.Column("pool", sa.String(40), nullable=True))
    op.create_index("ix_task_pool_id", "task", ["pool", "id"], postgresql_where=_PARKED, sqlite_where=_PARKED)
    op.add_column("node_run", sa.Column("waiting_for_pool", sa.String(40), nullable=True))


def downgrade() -> None:
    # Plain DROP COLUMN (SQLite 3.35+): a batch copy would lose the task table's AUTOINCREMENT.
    op.drop_column("node_run", "waiting_for_pool")
    op.drop_index("ix_task_pool_id", table_name="task")
    op.drop_column("task", "pool")
