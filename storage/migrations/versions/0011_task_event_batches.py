"""Task events stored by the batch: ``task_event_batch`` replaces ``task_event``.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30

One row holds the events one commit wrote for one task (``seq`` .. ``last_seq``, the events as a
JSON array of ``[seq, kind, at, data]``), not one row per event. A 10-node chain writes its 22
events as one row with its end: one JSON encoding and one index entry instead of 22, which was a
third of what events cost a task nobody watches. Every stored event is kept: each old row becomes
a batch of one.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The old rows as batches of one. SQLite keeps a datetime as "YYYY-MM-DD HH:MM:SS.ffffff" UTC text;
# PostgreSQL's is written as ISO 8601 in UTC: both read back with fromisoformat.
_PACK = {
    "sqlite": "json_array(json_array(seq, kind, replace(at, ' ', 'T') || 'Z', json(data)))",
    # In UTC whatever the session's TimeZone (a timestamptz's own JSON would carry that offset).
    "postgresql": ("json_build_array(json_build_array(seq, kind,"
                   " to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), data))"),
}
# And back: one row per event of each batch. An event is [seq, kind, at, data], or [seq, kind,
# data] once events lost their time (nothing showed it): those get the downgrade's time.
_UNPACK = {
    "sqlite": (
        "SELECT b.task_id, json_extract(e.value, '$[0]'), json_extract(e.value, '$[1]'),"
        " json(json_extract(e.value, '$[' || (json_array_length(e.value) - 1) || ']')),"
        " CASE WHEN json_array_length(e.value) = 4"
        " THEN replace(replace(json_extract(e.value, '$[2]'), 'T', ' '), 'Z', '')"
        " ELSE strftime('%Y-%m-%d %H:%M:%f000', 'now') END,"
        " b.final AND json_extract(e.value, '$[0]') = b.last_seq FROM task_event_batch b, json_each(b.events) e"
    ),
    "postgresql": (
        "SELECT b.task_id, (e.value->>0)::int, e.value->>1, e.value->(json_array_length(e.value) - 1),"
        " CASE WHEN json_array_length(e.value) = 4 THEN (e.value->>2)::timestamptz ELSE now() END,"
        " b.final AND (e.value->>0)::int = b.last_seq FROM task_event_batch b, json_array_elements(b.events) e"
    ),
}


def upgrade() -> None:
    op.create_table(
        "task_event_batch",
        sa.Column("task_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                  sa.ForeignKey("task.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("seq", sa.Integer(), primary_key=True),
        sa.Column("last_seq", sa.Integer(), nullable=False),
        sa.Column("final", sa.Boolean(), nullable=False),
        sa.Column("events", sa.JSON(none_as_null=True), nullable=False),
    )
    dialect = op.get_bind().dialect.name
    op.execute("INSERT INTO task_event_batch (task_id, seq, last_seq, final, events)"
               f" SELECT task_id, seq, seq, final, {_PACK[dialect]} FROM task_event")
    op.drop_table("task_event")


def downgrade() -> None:
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
    dialect = op.get_bind().dialect.name
    # "WHERE true": SQLite reads an ON CONFLICT right after a join as the join's ON otherwise.
    op.execute(f"INSERT INTO task_event (task_id, seq, kind, data, at, final) {_UNPACK[dialect]}"
               " WHERE true ON CONFLICT (task_id, seq) DO NOTHING")
    op.drop_table("task_event_batch")
