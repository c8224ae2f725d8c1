"""The reads the schedule and flow-end triggers make (SPEC §11); every write goes through ``create_task``.

Exactly-once needs no table of its own: a trigger-started task carries an idempotency key derived
from what started it (``trigger:flow:<source task id>``, ``trigger:schedule:…``) and the store
keeps one task per (flow, key). These queries only find what is left to start, cheaply: the
flows' latest revisions (ids and numbers, no definitions), and the ended tasks of a watched flow
that no task of the watching flow names yet.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa

from storage.errors import translated
from storage.repository import Repository
from storage.tables import flow as flow_t
from storage.tables import task as task_t

FLOW_KEY_PREFIX = "trigger:flow:"
"""A flow-end-started task's idempotency key is this and the source task's id."""
_UNENDED = ("queued", "running")


async def latest_revisions(repo: Repository) -> dict[str, int]:
    """``{flow id: latest revision}`` of every flow that is not deleted (one light query, no definitions)."""
    query = sa.select(flow_t.c.id, flow_t.c.latest_revision).where(flow_t.c.deleted.is_(False),
                                                                     flow_t.c.latest_revision > 0)
    async with translated(), repo.engine.connect() as conn:
        return {row.id: row.latest_revision for row in await conn.execute(query)}


async def unstarted_sources(repo: Repository, *, watched: str, statuses: Sequence[str], from_id: int,
                            finished_since: datetime, watcher: str, limit: int = 100) -> list[int]:
    """Ids of ``watched``'s tasks (id ≥ ``from_id``) that ended with one of ``statuses`` at or after
    ``finished_since`` and that no task of ``watcher`` was started for yet, oldest first.

    The "started for" probe is the (flow, idempotency key) unique index, once per candidate.
    """
    started_t = task_t.alias("started")
    started = sa.select(sa.literal(1)).select_from(started_t).where(
        started_t.c.flow_id == watcher,
        started_t.c.idempotency_key == sa.literal(FLOW_KEY_PREFIX) + sa.cast(task_t.c.id, sa.String))
    query = (sa.select(task_t.c.id)
             .where(task_t.c.flow_id == watched, task_t.c.id >= from_id, task_t.c.status.in_(list(statuses)),
                    task_t.c.finished >= finished_since, ~sa.exists(started))
             .order_by(task_t.c.id).limit(limit))
    async with translated(), repo.engine.connect() as conn:
        return list((await conn.execute(query)).scalars())


async def settled_below(repo: Repository, *, watched: str, from_id: int, created_before: datetime) -> int:
    """The lowest id from which ``watched``'s tasks may still end or appear, at or above ``from_id``.

    Below it every task has ended; a task created after ``created_before`` counts as not settled
    either (a transaction holding a lower id may commit after a higher one: ids are not commit order).
    """
    unsettled = sa.or_(task_t.c.status.in_(_UNENDED), task_t.c.created > created_before)
    query = sa.select(sa.func.min(sa.case((unsettled, task_t.c.id))), sa.func.max(task_t.c.id)).where(
        task_t.c.flow_id == watched, task_t.c.id >= from_id)
    async with translated(), repo.engine.connect() as conn:
        lowest_open, highest = (await conn.execute(query)).one()
    if lowest_open is not None:
        return int(lowest_open)
    return int(highest) + 1 if highest is not None else from_id
