"""The file store over a bucket (FILES_URL) on a real S3-protocol server (moto's, its own process).

The same behaviours as the directory store's tests (test_files.py) where they apply: records,
dedup, ranges, delete, nothing kept on failure, a missing blob is a clear error; and what only
an object store has: multipart uploads while the stream arrives, copies past CopyObject's
limit, crash leftovers swept, and start-up errors that say what to fix.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import sqlalchemy as sa

from graph_runtime.errors import StoreUnavailable
from nodes.errors import OutputTooLarge
from nodes.files import File, FileNotFound
from storage import tables
from storage.engine import create_engine, dispose
from storage.files import BlobFileStore, open_file_store
from storage.files.retention import sweep
from storage.files.s3 import PART, ObjectStoreError, S3Blobs, S3Location
from storage.repository import Repository
from tests.processes import free_port
from tests.s3 import aws_env, keys, moto_server, new_bucket, s3_client, session, uploads

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

PREFIX = "team/files"
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture
def aws(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The AWS_* variables pointing at the server, as a user would export them."""
    for name, value in aws_env(endpoint).items():
        monkeypatch.setenv(name, value)
    return endpoint


@pytest.fixture
async def client(aws: str) -> AsyncIterator[S3Client]:
    async with s3_client(aws) as s3:
        yield s3


@pytest.fixture
async def bucket(client: S3Client) -> str:
    return await new_bucket(client)


@pytest.fixture
async def repo(db_url: str) -> AsyncIterator[Repository]:
    """SQLite only: the records are the directory store's, tested on PostgreSQL too in test_files.py."""
    engine = create_engine(db_url)
    try:
        yield Repository(engine)
    finally:
        await dispose(engine)


@pytest.fixture
async def store(repo: Repository, bucket: str) -> AsyncIterator[BlobFileStore]:
    """A store in the bucket under PREFIX (path-style, as for MinIO), on the test's database."""
    async with repo.engine.begin() as conn:
        await conn.execute(tables.file.delete())
    blobs = await S3Blobs.open(f"s3://{bucket}/{PREFIX}/", path_style=True, session=session())
    files = BlobFileStore(blobs, repo.engine, max_bytes=64 * MIB)
    yield files
    await files.aclose()


async def test_files_url_chooses_the_bucket_over_files_dir(repo: Repository, bucket: str, client: S3Client,
                                                           tmp_path: Path) -> None:
    files = await open_file_store(repo.engine, files_dir=tmp_path / "unused", files_url=f"s3://{bucket}/{PREFIX}",
                                  s3_path_style=True)
    try:
        assert isinstance(files.blobs, S3Blobs)
        file = await files.put_bytes(b"shared", name="s.txt", content_type="text/plain")
        assert await objects(client, bucket) == [blob_name(file)] and not (tmp_path / "unused").exists()
    finally:
        await files.aclose()


async def objects(client: S3Client, bucket: str) -> list[str]:
    return [key.removeprefix(PREFIX + "/") for key in await keys(client, bucket)]


def blob_name(file: File) -> str:
    return f"{file.sha256[:2]}/{file.sha256}"


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def read_all(store: BlobFileStore, file: File, start: int = 0, end: int | None = None) -> bytes:
    return b"".join([chunk async for chunk in store.read(file, start, end)])


async def test_put_get_read_ranges_and_local_path(store: BlobFileStore, client: S3Client, bucket: str,
                                                  tmp_path: Path) -> None:
    file = await store.put(chunks(b"hello ", b"world"), name="greeting.txt", content_type="text/plain")
    assert (file.name, file.content_type, file.size) == ("greeting.txt", "text/plain", 11)
    assert file.sha256 == hashlib.sha256(b"hello world").hexdigest()
    assert await objects(client, bucket) == [blob_name(file)]
    assert await store.get(file.id) == file
    assert await read_all(store, file) == b"hello world"
    assert await read_all(store, file, 6) == b"world" and await read_all(store, file, 2, 4) == b"ll"
    assert await read_all(store, file, 5, 500) == b" world" and await read_all(store, file, 11) == b""
    async with store.local_path(file) as path:
        assert path.read_bytes() == b"hello world"
    assert not path.exists()  # the download was a temporary file
    source = tmp_path / "frame.png"
    source.write_bytes(b"\x89PNG" * 1000)
    from_path = await store.put_path(source, name="frame.png", content_type="image/png")
    assert from_path.size == 4000 and source.exists() and await read_all(store, from_path, 0, 4) == b"\x89PNG"
    empty = await store.put_bytes(b"", name="empty", content_type="application/octet-stream")
    assert empty.size == 0 and await read_all(store, empty) == b""
    async with store.local_path(empty) as path:
        assert path.read_bytes() == b""
    with pytest.raises(FileNotFound):
        await store.get("no-such-file")


async def test_a_large_upload_goes_up_in_parts_while_it_streams(store: BlobFileStore, client: S3Client,
                                                                bucket: str) -> None:
    data = os.urandom(2 * PART + 17)
    halfway = asyncio.Event()
    resume = asyncio.Event()

    async def stream() -> AsyncIterator[bytes]:
        for start in range(0, len(data), MIB):
            if start == 2 * PART:
                halfway.set()
                await resume.wait()
            yield data[start:start + MIB]

    putting = asyncio.create_task(store.put(stream(), name="big.bin", content_type="application/octet-stream"))
    await asyncio.wait_for(halfway.wait(), 10)
    begun = await uploads(client, bucket)
    assert len(begun) == 1 and begun[0]["Key"].startswith(f"{PREFIX}/.staged/")
    parts = await client.list_parts(Bucket=bucket, Key=begun[0]["Key"], UploadId=begun[0]["UploadId"])
    assert [part["Size"] for part in parts["Parts"]] == [PART, PART]  # sent before the stream ended
    resume.set()
    file = await putting
    assert file.sha256 == hashlib.sha256(data).hexdigest() and file.size == len(data)
    assert await objects(client, bucket) == [blob_name(file)] and await uploads(client, bucket) == []
    assert await read_all(store, file) == data
    assert await read_all(store, file, PART - 3, PART + 5) == data[PART - 3:PART + 5]
    assert max([len(c) async for c in store.read(file)]) <= MIB


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/self/status")


async def test_memory_stays_flat_for_a_large_file(store: BlobFileStore) -> None:
    size, block = 64 * MIB, os.urandom(MIB)

    async def body() -> AsyncIterator[bytes]:
        for _ in range(size // MIB):
            yield block

    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
    before = _rss()
    file = await store.put(body(), name="big.bin", content_type="application/octet-stream")
    received = sum([len(chunk) async for chunk in store.read(file)])
    grown = _rss() - before
    assert received == size == file.size
    # A part (8 MiB) is held while it is sent, and the client copies it a few times; keeping the
    # file would cost its 64 MiB at least once more. 18 MiB measured alone, 32 in a full suite run.
    assert grown < 48 * MIB, f"peak RSS grew {grown / MIB:.1f} MiB for a 64 MiB upload and download"


async def test_equal_bytes_share_one_object_until_the_last_record_goes(store: BlobFileStore, client: S3Client,
                                                                       bucket: str) -> None:
    first = await store.put_bytes(b"same", name="a", content_type="text/plain")
    second = await store.put_bytes(b"same", name="b", content_type="text/plain")
    assert first.id != second.id and await objects(client, bucket) == [blob_name(first)]
    assert await store.delete(first.id) and await objects(client, bucket) == [blob_name(first)]
    assert await read_all(store, second) == b"same"
    assert await store.delete(second.id) and await objects(client, bucket) == []
    assert not await store.delete(second.id)


async def test_an_object_in_removal_comes_back_when_a_record_appears(store: BlobFileStore, client: S3Client,
                                                                     bucket: str) -> None:
    file = await store.put_bytes(b"racing", name="r", content_type="text/plain")

    async def a_new_upload_landed() -> bool:
        return True  # as if an upload of equal bytes inserted its record meanwhile

    assert not await store.blobs.remove(file.sha256, a_new_upload_landed)
    assert await read_all(store, file) == b"racing" and await objects(client, bucket) == [blob_name(file)]


async def test_over_max_bytes_nothing_is_kept(store: BlobFileStore, client: S3Client, bucket: str) -> None:
    with pytest.raises(OutputTooLarge):
        await store.put(chunks(b"x" * 1000), name="big", content_type="text/plain", max_bytes=999)
    with pytest.raises(OutputTooLarge):  # past a part: the multipart upload is aborted
        await store.put(chunks(*[b"y" * MIB] * 10), name="big", content_type="text/plain", max_bytes=PART + 1)
    assert await keys(client, bucket) == [] and await uploads(client, bucket) == []
    assert await store.records.fetch(sa.select(tables.file.c.id)) == []


async def test_a_failing_stream_keeps_nothing(store: BlobFileStore, client: S3Client, bucket: str) -> None:
    async def broken(size: int) -> AsyncIterator[bytes]:
        yield b"z" * size
        raise ConnectionResetError("client went away")

    for size in (4, PART + 1):
        with pytest.raises(ConnectionResetError):
            await store.put(broken(size), name="b", content_type="text/plain")
    assert await keys(client, bucket) == [] and await uploads(client, bucket) == []
    assert await store.records.fetch(sa.select(tables.file.c.id)) == []


async def test_a_missing_object_is_a_clear_error(store: BlobFileStore, client: S3Client, bucket: str) -> None:
    file = await store.put_bytes(b"gone soon", name="g", content_type="text/plain")
    await client.delete_object(Bucket=bucket, Key=f"{PREFIX}/{blob_name(file)}")
    with pytest.raises(FileNotFoundError, match=file.sha256):
        await read_all(store, file)
    with pytest.raises(FileNotFoundError, match=file.sha256):
        async with store.local_path(file):
            pass
    assert await store.delete(file.id)  # the record goes even though its bytes went first


async def test_objects_past_the_copy_limit_are_copied_part_by_part(store: BlobFileStore, client: S3Client,
                                                                   bucket: str) -> None:
    assert isinstance(store.blobs, S3Blobs)
    store.blobs.copy_max = PART  # CopyObject's 5 GiB limit, scaled down to a part
    data = os.urandom(2 * PART + 5)
    file = await store.put_bytes(data, name="huge.bin", content_type="application/octet-stream")
    assert await read_all(store, file) == data and await objects(client, bucket) == [blob_name(file)]

    async def needed() -> bool:
        return True

    assert not await store.blobs.remove(file.sha256, needed)  # set aside and back: two more copies
    assert await read_all(store, file) == data and await uploads(client, bucket) == []


async def test_what_a_crash_left_is_swept(store: BlobFileStore, client: S3Client, bucket: str) -> None:
    await client.put_object(Bucket=bucket, Key=f"{PREFIX}/.staged/abandoned", Body=b"half")
    kept = await store.put_bytes(b"kept", name="k", content_type="text/plain")
    assert isinstance(store.blobs, S3Blobs)
    assert await store.blobs.sweep_staged(3600) == 0  # younger than the grace: maybe an upload in progress
    # (moto reports every multipart upload as begun in 2010, so the grace is checked on objects only)
    await client.create_multipart_upload(Bucket=bucket, Key=f"{PREFIX}/.staged/unfinished")
    assert await store.blobs.sweep_staged(-1) == 2
    assert await objects(client, bucket) == [blob_name(kept)] and await uploads(client, bucket) == []


async def test_retention_deletes_objects_no_task_needs(store: BlobFileStore, repo: Repository, client: S3Client,
                                                       bucket: str) -> None:
    stale = await store.put_bytes(b"stale", name="s", content_type="text/plain")
    fresh = await store.put_bytes(b"fresh", name="f", content_type="text/plain")
    async with repo.engine.begin() as conn:
        await conn.execute(tables.file.update().where(tables.file.c.id == stale.id)
                           .values(created=datetime.now(UTC) - timedelta(days=2)))
    report = await sweep(store, retention_days=7)
    assert report.deleted == 1 and await objects(client, bucket) == [blob_name(fresh)]


async def test_start_errors_say_what_to_fix(aws: str, bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ObjectStoreError, match="no-such-bucket-here does not exist"):
        await S3Blobs.open("s3://no-such-bucket-here/x", path_style=True, session=session())
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(StoreUnavailable, match="does not answer"):
        await S3Blobs.open(f"s3://{bucket}", path_style=True, session=session())
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    with pytest.raises(ObjectStoreError, match="AWS_ACCESS_KEY_ID"):  # a new session: one caches credentials
        await S3Blobs.open(f"s3://{bucket}", path_style=True)


@pytest.mark.parametrize(("url", "expected"), [
    ("s3://bucket", S3Location("bucket", "")),
    ("s3://my.bucket-1/a/b/", S3Location("my.bucket-1", "a/b")),
])
def test_s3_urls(url: str, expected: S3Location) -> None:
    assert S3Location.parse(url) == expected


@pytest.mark.parametrize(("url", "message"), [
    ("https://bucket/x", "not an s3://bucket/prefix URL"),
    ("s3:///prefix", "not an s3://bucket/prefix URL"),
    ("s3://b/x", "not an S3 bucket name"),
    ("s3://Bad_Bucket/x", "not an S3 bucket name"),
])
def test_bad_s3_urls_say_what_to_write(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        S3Location.parse(url)


async def test_an_object_stays_when_the_database_cannot_say_whether_it_is_needed(
        store: BlobFileStore, client: S3Client, bucket: str) -> None:
    file = await store.put_bytes(b"unsure", name="u", content_type="text/plain")

    async def database_away() -> bool:
        raise StoreUnavailable("the database is unavailable")

    with pytest.raises(StoreUnavailable):
        await store.blobs.remove(file.sha256, database_away)
    assert await read_all(store, file) == b"unsure" and await objects(client, bucket) == [blob_name(file)]
