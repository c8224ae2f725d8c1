"""The file store nodes and the API use (``nodes.files.FileStore``): records over content-addressed blobs."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from nodes.files import File, FileNotFound
from storage.files.blobs import CHUNK, BlobStore, LocalBlobs
from storage.files.records import FileRecords

DEFAULT_MAX_BYTES = 1024**3
"""MAX_FILE_BYTES's default: 1 GiB."""


def new_file_id() -> str:
    """A random, URL-safe file id (22 characters, 128 bits): unguessable, so ids are no index."""
    return secrets.token_urlsafe(16)


class BlobFileStore:
    """A :class:`nodes.files.FileStore`: records in the database, bytes in a :class:`BlobStore`.

    Args:
        blobs: where the bytes go (a directory, or an S3-compatible bucket).
        engine: the database holding the ``file`` table.
        max_bytes: the largest file accepted (``MAX_FILE_BYTES``); a call may only lower it.
    """

    def __init__(self, blobs: BlobStore, engine: AsyncEngine, *, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.blobs = blobs
        self.records = FileRecords(engine)
        self.max_bytes = max_bytes

    async def put(self, chunks: AsyncIterable[bytes], *, name: str, content_type: str,
                  max_bytes: int | None = None) -> File:
        """Store a stream as a new file (see ``FileStore.put``); nothing is kept on failure."""
        limit = self.max_bytes if max_bytes is None else min(max_bytes, self.max_bytes)
        staged = await self.blobs.stage(chunks, limit)
        file = File.model_validate({"$file": new_file_id(), "name": name or "file",
                                    "content_type": content_type or "application/octet-stream",
                                    "size": staged.size, "sha256": staged.sha256})
        try:
            # The record first, then the blob: a concurrent delete of equal bytes sees the record.
            await self.records.insert(file, datetime.now(UTC))
        except BaseException:
            await asyncio.shield(self.blobs.discard(staged))
            raise
        try:
            await asyncio.shield(self.blobs.publish(staged))
        except BaseException:
            await asyncio.shield(self._forget(file))
            raise
        return file

    async def put_bytes(self, data: bytes, *, name: str, content_type: str) -> File:
        """Store ``data`` as a new file."""
        return await self.put(_chunks_of(data), name=name, content_type=content_type)

    async def put_path(self, path: Path, *, name: str, content_type: str) -> File:
        """Store the file at ``path`` as a new file; ``path`` is left as it is."""
        return await self.put(_chunks_from(path), name=name, content_type=content_type)

    async def get(self, file_id: str) -> File:
        """The file with this id.

        Raises:
            FileNotFound: no such file.
        """
        file = await self.records.get(file_id)
        if file is None:
            raise FileNotFound(file_id)
        return file

    def local_path(self, file: File) -> AbstractAsyncContextManager[Path]:
        """A local path holding the file's bytes while the block runs (read it, never write it)."""
        return self.blobs.local_path(file.sha256)

    def read(self, file: File, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """The file's bytes from ``start`` up to ``end`` (exclusive), in chunks of up to 1 MiB."""
        stop = file.size if end is None else min(end, file.size)
        return self.blobs.read(file.sha256, max(start, 0), stop)

    async def delete(self, file_id: str) -> bool:
        """Delete a file; its blob goes when no other file has the same bytes. False: no such file."""
        # Shielded: a cancel between the record and the blob would leave bytes nobody can reach.
        return await asyncio.shield(self._delete(file_id))

    async def _delete(self, file_id: str) -> bool:
        file = await self.records.delete(file_id)
        if file is None:
            return False
        await self._drop_blob(file.sha256)
        return True

    async def mark_used(self, file_ids: Iterable[str]) -> int:
        """Record that a task references these files (unknown ids are ignored); how many changed."""
        return await self.records.mark_used(file_ids)

    async def aclose(self) -> None:
        """Release the blob store's connections (the process is stopping)."""
        await self.blobs.aclose()

    async def _drop_blob(self, sha256: str) -> None:
        if not await self.records.shares(sha256):
            await self.blobs.remove(sha256, lambda: self.records.shares(sha256))

    async def _forget(self, file: File) -> None:
        await self.records.delete(file.id)


class LocalFileStore(BlobFileStore):
    """The default file store: records in the database, blobs under ``root`` (``FILES_DIR``)."""

    def __init__(self, root: Path, engine: AsyncEngine, *, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        super().__init__(LocalBlobs(root), engine, max_bytes=max_bytes)
        self.root = Path(root)


async def _chunks_of(data: bytes) -> AsyncIterator[bytes]:
    view = memoryview(data)
    for start in range(0, len(view), CHUNK):
        yield bytes(view[start:start + CHUNK])


async def _chunks_from(path: Path) -> AsyncIterator[bytes]:
    handle = await asyncio.to_thread(open, path, "rb")
    try:
        while chunk := await asyncio.to_thread(handle.read, CHUNK):
            yield chunk
    finally:
        await asyncio.to_thread(handle.close)
