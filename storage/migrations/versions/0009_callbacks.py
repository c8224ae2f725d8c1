"""Callbacks (SPEC §11): the outbox of signed task-end deliveries, their attempts, and the sweep's
state with the signing secret.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04

``callback_state`` is one row: the id of the last task the sweep read, and the ``whsec_`` secret
sealed by the secrets cipher. The row starts at the newest task id there is: a task created before
this revision cannot carry a callback (neither ``callback_url`` nor ``on_end`` existed), so the
first sweep of an upgraded database reads no history. New tables only: nothing is rewritten.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "callback_delivery",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("task_id", BigId, sa.ForeignKey("task.id", ondelete="CASCADE"), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("webhook_id", sa.String(64), nullable=False, unique=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("deadline", sa.DateTime(timezone=True), nullable=True),
        sa.Column("claim", sa.String(64), nullable=True),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_callback_delivery_state_next_at", "callback_delivery", ["state", "next_at"])
    op.create_index("ix_callback_delivery_task_id", "callback_delivery", ["task_id"])
    op.create_table(
        "callback_attempt",
        sa.Column("delivery_id", BigId, sa.ForeignKey("callback_delivery.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("number", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("duration_s", sa.Float(), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
    )
    state = op.create_table(
        "callback_state",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("seen_task_id", BigId, nullable=False),
        sa.Column("secret_nonce", sa.LargeBinary(), nullable=True),
        sa.Column("secret_ciphertext", sa.LargeBinary(), nullable=True),
        sa.Column("secret_created", sa.DateTime(timezone=True), nullable=True),
        sa.Column("secret_shown", sa.Boolean(), nullable=False),
    )
    newest = op.get_bind().execute(sa.text("SELECT COALESCE(MAX(id), 0) FROM task")).scalar_one()
    op.bulk_insert(state, [{"id": 1, "seen_task_id": newest, "secret_shown": False}])


def downgrade() -> None:
    op.drop_table("callback_state")
    op.drop_table("callback_attempt")
    op.drop_index("ix_callback_delivery_task_id", table_name="callback_delivery")
    op.drop_index("ix_callback_delivery_state_next_at", table_name="callback_delivery")
    op.drop_table("callback_delivery")
