"""The ``file`` table: one record per stored file (id, name, type, size, hash, when, used)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from nodes.files import File
from storage import tables
from storage.repository_base import RepositoryBase

_file = tables.file
BATCH = 500
"""Ids per ``IN (…)`` list and rows per fetched page: well under every driver's parameter limit."""


def as_file(row: Any) -> File:
    """The :class:`File` a ``file`` row describes."""
    return File.model_validate({"$file": row.id, "name": row.name, "content_type": row.content_type,
                                "size": row.size, "sha256": row.sha256})


class FileRecords(RepositoryBase):
    """Reads and writes of the ``file`` table; each call is one read or one transaction."""

    async def insert(self, file: File, created: datetime) -> None:
        """Record a new file (its blob is published right after, see ``BlobStore.remove``)."""
        async with self._write() as conn:
            await conn.execute(_file.insert().values(
                id=file.id, sha256=file.sha256, size=file.size, name=file.name,
                content_type=file.content_type, created=created, used=False))

    async def get(self, file_id: str) -> File | None:
        """The file with this id, or None."""
        async with self._read() as conn:
            row = (await conn.execute(sa.select(_file).where(_file.c.id == file_id))).first()
        return None if row is None else as_file(row)

    async def is_used(self, file_id: str) -> bool | None:
        """Whether a task has referenced the file (None: no such file)."""
        async with self._read() as conn:
            return (await conn.execute(sa.select(_file.c.used).where(_file.c.id == file_id))).scalar()

    async def delete(self, file_id: str) -> File | None:
        """Delete the record; the file it described, or None if there was none."""
        async with self._write() as conn:
            row = (await conn.execute(sa.select(_file).where(_file.c.id == file_id))).first()
            if row is None:
                return None
            await conn.execute(_file.delete().where(_file.c.id == file_id))
        return as_file(row)

    async def shares(self, sha256: str) -> bool:
        """Whether any record still names this blob."""
        async with self._read() as conn:
            found = await conn.execute(sa.select(_file.c.id).where(_file.c.sha256 == sha256).limit(1))
            return found.first() is not None

    async def mark_used(self, file_ids: Iterable[str]) -> int:
        """Mark these files as referenced by a task; how many changed (unknown ids are ignored)."""
        changed = 0
        for batch in _batches(sorted(set(file_ids))):
            async with self._write() as conn:
                result = await conn.execute(_file.update().where(_file.c.id.in_(batch), _file.c.used.is_(False))
                                            .values(used=True))
                changed += result.rowcount or 0
        return changed

    async def fetch(self, query: sa.Select[Any]) -> list[Any]:
        """The rows of a read-only query (the retention scan's pages over tasks)."""
        async with self._read() as conn:
            return list((await conn.execute(query)).all())

    async def older_than(self, cutoff: datetime) -> AsyncIterator[list[tuple[str, bool]]]:
        """Pages of ``(id, used)`` of files created before ``cutoff``, oldest first."""
        after = ""
        while True:
            query = (sa.select(_file.c.id, _file.c.used).where(_file.c.created < cutoff, _file.c.id > after)
                     .order_by(_file.c.id).limit(BATCH))
            async with self._read() as conn:
                page = [(row.id, row.used) for row in await conn.execute(query)]
            if not page:
                return
            yield page
            after = page[-1][0]


def _batches(ids: list[str]) -> Iterable[list[str]]:
    for start in range(0, len(ids), BATCH):
        yield ids[start:start + BATCH]
