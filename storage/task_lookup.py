"""Finding a task by the idempotency key it was created with, whatever its flow (Ziggy's ``executionId``).

Keys are unique per flow (``uq_task_flow_idempotency_key``), so the lookup walks the flows and
probes that index once per flow instead of scanning every task; the newest match wins.
"""

from __future__ import annotations

import sqlalchemy as sa

from storage.errors import translated
from storage.repository import Repository
from storage.tables import flow as flow_t
from storage.tables import task as task_t


async def task_id_by_idempotency_key(repo: Repository, key: str) -> int | None:
    """The id of the newest task created with ``key`` on any flow, or None."""
    joined = flow_t.join(task_t, sa.and_(task_t.c.flow_id == flow_t.c.id, task_t.c.idempotency_key == key))
    query = sa.select(sa.func.max(task_t.c.id)).select_from(joined)  # max(), not ORDER BY: no scan by id
    async with translated(), repo.engine.connect() as conn:
        return (await conn.execute(query)).scalar_one_or_none()
