"""Flows and their revisions."""

from __future__ import annotations

from collections import OrderedDict
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from graph_runtime import errors
from graph_runtime import flow as flows
from graph_runtime.flow import Flow
from storage import convert
from storage.repository_base import RepositoryBase
from storage.tables import flow as flow_t
from storage.tables import flow_revision as revision_t

_CACHE_SIZE = 512


class FlowCache:
    """Parsed flow revisions, least recently used dropped first. A revision never changes."""

    def __init__(self, size: int = _CACHE_SIZE) -> None:
        self._size = size
        self._flows: OrderedDict[tuple[str, int], Flow] = OrderedDict()

    def get(self, flow_id: str, revision: int) -> Flow | None:
        found = self._flows.get((flow_id, revision))
        if found is not None:
            self._flows.move_to_end((flow_id, revision))
        return found

    def parse(self, flow_id: str, revision: int, definition: dict[str, Any]) -> Flow:
        """The cached flow, or ``definition`` parsed and cached."""
        found = self.get(flow_id, revision)
        if found is None:
            found = self.put(flow_id, revision, flows.parse(definition))
        return found

    def put(self, flow_id: str, revision: int, flow: Flow) -> Flow:
        self._flows[(flow_id, revision)] = flow
        if len(self._flows) > self._size:
            self._flows.popitem(last=False)
        return flow


class FlowReads(RepositoryBase):
    """A flow's revisions as a worker reads them (on the hot path), parsed once per process."""

    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__(engine)
        self._flow_cache = FlowCache()
        # Each flow's latest revision as this process last read or stored it (``get_flow(seen=True)``).
        self._latest: dict[str, tuple[int, datetime]] = {}

    async def get_flow(self, flow_id: str, revision: int | None = None, *,
                       seen: bool = False) -> tuple[Flow, int, datetime]:
        """The latest (or the given) revision of a flow that is not deleted.

        ``seen``: the latest revision as this process last read or stored it, without a read when
        it has one. Another process may have stored a newer one or deleted the flow since: a task
        made from it is created ``if_latest`` (``TaskStore.create_task``), which says so.

        Returns:
            ``(flow, revision, created)``, ``created`` being when that revision was stored.

        Raises:
            errors.FlowNotFound: no such flow, or it was deleted.
            errors.RevisionNotFound: the flow has no such revision.
        """
        if revision is None and seen and (known := self._latest.get(flow_id)) is not None:
            return await self.load_flow(flow_id, known[0]), known[0], known[1]
        found = await self._hot.flow_revision(flow_id, revision)
        if found is None or found[0]:
            self._latest.pop(flow_id, None)
            raise errors.FlowNotFound(f"no flow has the id {flow_id!r}")
        _, found_revision, created = found
        if found_revision is None:
            raise errors.RevisionNotFound(f"flow {flow_id!r} has no revision {revision}")
        assert created is not None, "a stored revision has its creation time"
        if revision is None:
            self._latest[flow_id] = (found_revision, created)
        return await self.load_flow(flow_id, found_revision), found_revision, created

    async def load_flow(self, flow_id: str, revision: int) -> Flow:
        """The definition of ``flow_id`` at ``revision``, deleted or not (cached in memory).

        Raises:
            errors.FlowNotFound: the flow never existed.
            errors.RevisionNotFound: the flow has no such revision.
        """
        cached = self._flow_cache.get(flow_id, revision)
        if cached is not None:
            return cached
        return self._flow_cache.parse(flow_id, revision, await self._hot.flow_definition(flow_id, revision))


class FlowMethods(FlowReads):
    """Saving, listing and deleting flows (the API's side). Revisions are kept forever."""

    async def save_flow(self, flow: Flow) -> tuple[int, bool]:
        """Store ``flow`` as a new revision unless its latest revision is the same definition.

        A deleted flow always gets a new revision (numbering continues) and is undeleted.

        Returns:
            ``(revision, True)`` when a revision was stored, ``(latest revision, False)`` when
            the definition is unchanged.
        """
        digest, now = flow.digest(), convert.utcnow()
        async with self._write() as conn:
            latest, deleted, latest_digest = await self._lock_flow_row(conn, flow.id, now)
            if latest and not deleted and latest_digest == digest:
                return latest, False
            revision = latest + 1
            await conn.execute(
                sa.insert(revision_t).values(
                    flow_id=flow.id, revision=revision, definition=flow.definition(), digest=digest, created=now
                )
            )
            await conn.execute(
                sa.update(flow_t)
                .where(flow_t.c.id == flow.id)
                .values(latest_revision=revision, deleted=False, updated=now)
            )
        # The flow just stored is that revision, parsed and validated: its first plan or run in
        # this process need not parse it again (1,000 nodes: tens of milliseconds).
        self._flow_cache.put(flow.id, revision, flow)
        self._latest[flow.id] = (revision, now)
        return revision, True

    async def _lock_flow_row(self, conn: AsyncConnection, flow_id: str, now: datetime) -> tuple[int, bool, str | None]:
        # Insert-if-missing then lock: two concurrent saves of a new flow serialise on the row
        # instead of one failing on the primary key (PostgreSQL; SQLite writers are serial).
        await conn.execute(
            self._insert(flow_t)
            .values(id=flow_id, latest_revision=0, deleted=False, created=now, updated=now)
            .on_conflict_do_nothing(index_elements=[flow_t.c.id])
        )
        row = (
            await conn.execute(
                sa.select(flow_t.c.latest_revision, flow_t.c.deleted, revision_t.c.digest)
                .select_from(flow_t.outerjoin(revision_t, _latest_revision_join()))
                .where(flow_t.c.id == flow_id)
                .with_for_update(of=flow_t)
            )
        ).one()
        return row.latest_revision, row.deleted, row.digest

    async def list_flows(self) -> list[tuple[Flow, int, datetime]]:
        """The latest revision of every flow that is not deleted, by id: ``(flow, revision, created)``."""
        async with self._read() as conn:
            rows = await conn.execute(
                sa.select(flow_t.c.id, revision_t.c.revision, revision_t.c.definition, revision_t.c.created)
                .select_from(flow_t.join(revision_t, _latest_revision_join()))
                .where(flow_t.c.deleted.is_(False))
                .order_by(flow_t.c.id)
            )
            return [
                (self._flow_cache.parse(row.id, row.revision, row.definition), row.revision, row.created)
                for row in rows
            ]

    async def delete_flow(self, flow_id: str) -> None:
        """Delete a flow. Its revisions stay, so its tasks can still be shown and resumed.

        Raises:
            errors.FlowNotFound: no such flow, or it was already deleted.
        """
        async with self._write() as conn:
            result = await conn.execute(
                sa.update(flow_t)
                .where(flow_t.c.id == flow_id, flow_t.c.deleted.is_(False))
                .values(deleted=True, updated=convert.utcnow())
            )
            self._latest.pop(flow_id, None)
            if result.rowcount == 0:
                raise errors.FlowNotFound(f"no flow has the id {flow_id!r}")


def _latest_revision_join() -> sa.ColumnElement[bool]:
    return sa.and_(revision_t.c.flow_id == flow_t.c.id, revision_t.c.revision == flow_t.c.latest_revision)
