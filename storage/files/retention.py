"""The retention sweep (SPEC §7): files no recent task references are deleted.

The rule, once an hour and at start: a file is kept while a task created within
``FILES_RETENTION_DAYS`` references it (in its request ``data``, its ``result`` or a node's
``output``), and for its first 24 hours in any case (an upload waiting for its task, a node's
file before its output is saved). Everything else is deleted: an upload never used within a
day, and a file whose last task is older than the retention. Files a scan finds referenced are
marked ``used``.

The scan reads only rows whose JSON text contains ``"$file"`` (a ``LIKE`` prefilter), a page at a
time, and decodes them on a thread: a week of tasks never sits in memory nor blocks the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from nodes import codec
from nodes.errors import GraphRuntimeError
from nodes.files import FILE_KEY, file_values
from storage import tables
from storage.files.store import BlobFileStore

log = logging.getLogger(__name__)

UNUSED_GRACE = timedelta(hours=24)
"""How long any file is kept before a task must reference it."""
SWEEP_EVERY_S = 3600.0
STAGED_GRACE_S = 3600.0
"""A staged upload untouched this long was left by a crash (a live one is written every chunk)."""
_PAGE = 200
_MARK = f'%"{FILE_KEY}"%'


@dataclass(frozen=True)
class SweepReport:
    """What one sweep did."""

    referenced: int  # distinct file ids referenced by tasks in the window
    marked_used: int
    deleted: int


async def sweep(store: BlobFileStore, *, retention_days: int, now: datetime | None = None,
                stop: asyncio.Event | None = None) -> SweepReport:
    """Delete the files the retention rule lets go (see the module docstring); ends early once ``stop`` is set."""
    now = now or datetime.now(UTC)
    candidates = [file_id async for page in store.records.older_than(now - UNUSED_GRACE)
                  for file_id, _ in page]
    referenced = await referenced_ids(store, now - timedelta(days=retention_days))
    marked = await store.mark_used(referenced)
    deleted = 0
    for file_id in candidates:
        if stop is not None and stop.is_set():
            break
        if file_id not in referenced and await store.delete(file_id):
            deleted += 1
    await store.blobs.sweep_staged(STAGED_GRACE_S)
    return SweepReport(len(referenced), marked, deleted)


async def referenced_ids(store: BlobFileStore, since: datetime) -> set[str]:
    """Ids of every file value in tasks created at or after ``since`` (data, result, node outputs)."""
    found: set[str] = set()
    async for texts in _json_texts(store, since):
        found |= await asyncio.to_thread(_ids_in, texts)
    return found


async def _json_texts(store: BlobFileStore, since: datetime) -> AsyncIterator[list[str]]:
    task, node_run = tables.task, tables.node_run
    text = {name: sa.cast(column, sa.Text) for name, column in
            (("data", task.c.data), ("result", task.c.result), ("output", node_run.c.output))}
    queries = (
        (task.c.id, sa.select(task.c.id, text["data"], text["result"]).where(
            task.c.created >= since, sa.or_(text["data"].like(_MARK), text["result"].like(_MARK)))),
        (node_run.c.task_id, sa.select(node_run.c.task_id, text["output"]).join(
            task, task.c.id == node_run.c.task_id).where(task.c.created >= since, text["output"].like(_MARK))),
    )
    for key, query in queries:
        after = -1
        while True:
            rows = await store.records.fetch(query.where(key > after).order_by(key).limit(_PAGE))
            if not rows:
                break
            after = rows[-1][0]
            yield [value for row in rows for value in row[1:] if value]


def _ids_in(texts: Iterable[str]) -> set[str]:
    ids: set[str] = set()
    for text in texts:
        with contextlib.suppress(codec.DecodeError):
            ids.update(str(value[FILE_KEY]) for value in file_values(codec.loads(text)))
    return ids


class RetentionSweeper:
    """Runs :func:`sweep` at start and every :data:`SWEEP_EVERY_S` in the background."""

    def __init__(self, store: BlobFileStore, *, retention_days: int, every_s: float = SWEEP_EVERY_S) -> None:
        self.store = store
        self.retention_days = retention_days
        self.every_s = every_s
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    def start(self) -> None:
        """Begin sweeping (the first sweep runs at once)."""
        self._task = asyncio.create_task(self._loop(), name="file-retention")

    async def stop(self, grace_s: float = 5.0) -> None:
        """Stop after the file being deleted (a sweep cut short resumes from scratch next time)."""
        self._stop.set()
        if self._task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._task), grace_s)
        except TimeoutError:  # a scan stuck on a busy database: cancel it, nothing is half-deleted
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                report = await sweep(self.store, retention_days=self.retention_days, stop=self._stop)
                log.info("file retention sweep: %d deleted, %d referenced", report.deleted, report.referenced,
                         extra={"action": "files_swept", "deleted": report.deleted})
            except (GraphRuntimeError, OSError) as exc:
                log.warning("file retention sweep failed, next in %.0f s: %s", self.every_s, exc,
                            extra={"action": "files_sweep_failed"})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.every_s)
