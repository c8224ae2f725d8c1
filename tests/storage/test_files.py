"""The file store on real disks and real databases (SQLite and PostgreSQL): records, blobs, retention."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from graph_runtime.flow import Flow
from graph_runtime.models import NodeRun, NodeStatus, TaskOutcome, TaskStatus
from nodes.errors import OutputTooLarge
from nodes.files import File, FileNotFound
from storage import tables
from storage.files import LocalFileStore
from storage.files.retention import RetentionSweeper, sweep
from storage.repository import Repository
from tests.storage.conftest import make_request

SavedFlow = Callable[..., Awaitable[Flow]]
NOW = datetime.now(UTC)


@pytest.fixture
async def store(repo: Repository, tmp_path: Path) -> LocalFileStore:
    """A store on the test's database (emptied on PostgreSQL) with blobs under tmp_path."""
    async with repo.engine.begin() as conn:
        await conn.execute(tables.file.delete())
    return LocalFileStore(tmp_path / "files", repo.engine, max_bytes=1024 * 1024)


def on_disk(store: LocalFileStore) -> list[str]:
    return sorted(p.name for p in store.root.rglob("*") if p.is_file())


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def read_all(store: LocalFileStore, file: File, start: int = 0, end: int | None = None) -> bytes:
    return b"".join([chunk async for chunk in store.read(file, start, end)])


async def test_put_get_read_and_local_path(store: LocalFileStore, tmp_path: Path) -> None:
    file = await store.put(chunks(b"hello ", b"world"), name="greeting.txt", content_type="text/plain")
    assert (file.name, file.content_type, file.size) == ("greeting.txt", "text/plain", 11)
    assert file.sha256 == hashlib.sha256(b"hello world").hexdigest()
    assert await store.get(file.id) == file
    assert await read_all(store, file) == b"hello world"
    assert await read_all(store, file, 6) == b"world" and await read_all(store, file, 2, 4) == b"ll"
    assert await read_all(store, file, 5, 500) == b" world"
    async with store.local_path(file) as path:
        assert path == store.root / file.sha256[:2] / file.sha256 and path.read_bytes() == b"hello world"
    source = tmp_path / "frame.png"
    source.write_bytes(b"\x89PNG" * 1000)
    from_path = await store.put_path(source, name="frame.png", content_type="image/png")
    assert from_path.size == 4000 and source.exists()
    from_bytes = await store.put_bytes(b"", name="empty", content_type="application/octet-stream")
    assert from_bytes.size == 0 and await read_all(store, from_bytes) == b""
    with pytest.raises(FileNotFound):
        await store.get("no-such-file")


async def test_large_streams_are_hashed_and_kept_exactly(store: LocalFileStore) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    store.max_bytes = len(data)
    parts = [data[i:i + 100_000] for i in range(0, len(data), 100_000)]
    file = await store.put(chunks(*parts), name="x.bin", content_type="application/octet-stream")
    assert file.sha256 == hashlib.sha256(data).hexdigest() and await read_all(store, file) == data
    assert max([len(c) async for c in store.read(file)]) <= 1024 * 1024


async def test_equal_bytes_share_one_blob_until_the_last_record_goes(store: LocalFileStore) -> None:
    first = await store.put_bytes(b"same", name="a", content_type="text/plain")
    second = await store.put_bytes(b"same", name="b", content_type="text/plain")
    assert first.id != second.id and on_disk(store) == [first.sha256]
    assert await store.delete(first.id) and on_disk(store) == [first.sha256]
    assert await read_all(store, second) == b"same"
    assert await store.delete(second.id) and on_disk(store) == []
    assert not await store.delete(second.id)


async def test_a_blob_in_removal_comes_back_when_a_record_appears(store: LocalFileStore) -> None:
    file = await store.put_bytes(b"racing", name="r", content_type="text/plain")

    async def a_new_upload_landed() -> bool:
        return True  # as if an upload of equal bytes inserted its record meanwhile

    assert not await store.blobs.remove(file.sha256, a_new_upload_landed)
    assert await read_all(store, file) == b"racing" and on_disk(store) == [file.sha256]


async def test_over_max_bytes_nothing_is_kept(store: LocalFileStore) -> None:
    with pytest.raises(OutputTooLarge):
        await store.put(chunks(b"x" * 600_000, b"y" * 600_000), name="big", content_type="text/plain")
    with pytest.raises(OutputTooLarge):
        await store.put(chunks(b"x" * 1000), name="big", content_type="text/plain", max_bytes=999)
    assert on_disk(store) == []
    assert await store.records.fetch(sa.select(tables.file.c.id)) == []


async def test_a_failing_stream_keeps_nothing(store: LocalFileStore) -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield b"part"
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        await store.put(broken(), name="b", content_type="text/plain")
    assert on_disk(store) == []


async def test_ids_are_random_and_url_safe(store: LocalFileStore) -> None:
    files = await asyncio.gather(*(store.put_bytes(b"%d" % i, name="n", content_type="t") for i in range(20)))
    ids = {file.id for file in files}
    assert len(ids) == 20 and all(len(i) == 22 and i.replace("-", "").replace("_", "").isalnum() for i in ids)


async def age(repo: Repository, table: sa.Table, ids: list[Any], days: float) -> None:
    async with repo.engine.begin() as conn:
        await conn.execute(table.update().where(table.c.id.in_(ids)).values(created=NOW - timedelta(days=days)))


async def test_retention_keeps_what_recent_tasks_reference(store: LocalFileStore, repo: Repository,
                                                           saved_flow: SavedFlow) -> None:
    await saved_flow()
    f = {name: await store.put_bytes(name.encode(), name=name, content_type="text/plain")
         for name in ("in_data", "in_result", "in_output", "fresh_upload", "stale_upload", "old_task_only")}
    recent, _ = await repo.create_task("demo", 1, make_request(image=f["in_data"].as_value()))
    await repo.claim_task(recent.id)
    run = NodeRun("end", NodeStatus.SUCCEEDED, NOW, NOW, output={"x": [{"y": f["in_output"].as_value()}]})
    await repo.finish_task(recent.id, TaskOutcome(TaskStatus.SUCCEEDED, NOW, 0.1, 0.0,
                                                  result={"file": f["in_result"].as_value()}), [run])
    old, _ = await repo.create_task("demo", 1, make_request(image=f["old_task_only"].as_value()))
    await age(repo, tables.task, [old.id], days=8)
    await age(repo, tables.file, [f[n].id for n in f if n != "fresh_upload"], days=2)

    report = await sweep(store, retention_days=7, now=NOW)

    kept = {name for name, file in f.items() if await store.records.get(file.id) is not None}
    assert kept == {"in_data", "in_result", "in_output", "fresh_upload"}
    assert report.deleted == 2 and report.referenced == 3 and report.marked_used == 3
    assert await store.records.is_used(f["in_data"].id) and not await store.records.is_used(f["fresh_upload"].id)
    assert sorted(on_disk(store)) == sorted(f[n].sha256 for n in kept)
    assert (await sweep(store, retention_days=7, now=NOW)).deleted == 0  # idempotent


async def test_the_sweeper_runs_at_start_and_stops(store: LocalFileStore, repo: Repository) -> None:
    stale = await store.put_bytes(b"stale", name="s", content_type="text/plain")
    await age(repo, tables.file, [stale.id], days=2)
    sweeper = RetentionSweeper(store, retention_days=7, every_s=3600)
    sweeper.start()
    for _ in range(200):
        if await store.records.get(stale.id) is None:
            break
        await asyncio.sleep(0.01)
    await sweeper.stop()
    assert await store.records.get(stale.id) is None and on_disk(store) == []
