"""Where file bytes live, by content: the :class:`BlobStore` seam and its directory implementation.

A blob is named by the hex SHA-256 of its bytes, so equal bytes are stored once. The metadata
layer (:mod:`storage.files.store`) sits on top of either implementation of :class:`BlobStore`:
this directory, or an S3-compatible bucket (:mod:`storage.files.s3`).

Writes are all-or-nothing: bytes go to a temporary file in the store's own directory (same file
system) while they are hashed, are fsynced, and only then renamed into place with ``os.replace``.
A reader never sees half a blob, and a failed write (too large, disk full) leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import secrets
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

from nodes.errors import OutputTooLarge, StorageFull

CHUNK = 1024 * 1024
"""Bytes per read and write: big enough that a thread hop per chunk costs nothing measurable."""

TMP_DIR = ".tmp"
_FULL = (errno.ENOSPC, errno.EDQUOT)


@dataclass(frozen=True)
class Staged:
    """Bytes written and hashed but not yet visible under their name (see :meth:`BlobStore.stage`)."""

    sha256: str
    size: int
    token: str  # the blob store's handle on the staged bytes (a temporary path; on S3 a staged key)


class BlobStore(Protocol):
    """Content-addressed bytes. Every method is safe on the event loop (blocking I/O on threads)."""

    async def stage(self, chunks: AsyncIterable[bytes], max_bytes: int | None) -> Staged:
        """Write a stream and hash it, invisible until :meth:`publish`.

        Raises:
            OutputTooLarge: more than ``max_bytes`` arrived; nothing was kept.
            StorageFull: no space left; nothing was kept.
        """

    async def publish(self, staged: Staged) -> None:
        """Make staged bytes the blob ``staged.sha256`` (replacing an equal one is harmless)."""

    async def discard(self, staged: Staged) -> None:
        """Forget staged bytes."""

    async def remove(self, sha256: str, still_needed: Callable[[], Awaitable[bool]]) -> bool:
        """Remove a blob unless ``still_needed`` says a record appeared meanwhile; True if removed."""

    def local_path(self, sha256: str) -> AbstractAsyncContextManager[Path]:
        """A local path holding the blob while the block runs."""

    def read(self, sha256: str, start: int, end: int) -> AsyncIterator[bytes]:
        """The blob's bytes in ``[start, end)``, in chunks of at most :data:`CHUNK`.

        Raises:
            FileNotFoundError: the blob is missing (its record outlived it).
        """

    async def sweep_staged(self, older_than_s: float) -> int:
        """Remove staged bytes a crash left more than ``older_than_s`` ago; how many."""

    async def aclose(self) -> None:
        """Release what the store holds open (a client's connections)."""


class LocalBlobs:
    """Blobs in a directory: ``<root>/<sha[:2]>/<sha>``; staged bytes in ``<root>/.tmp/``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, sha256: str) -> Path:
        """Where the blob with this hash lives."""
        return self.root / sha256[:2] / sha256

    async def stage(self, chunks: AsyncIterable[bytes], max_bytes: int | None) -> Staged:
        tmp = await asyncio.to_thread(self._open_tmp)
        digest, size = hashlib.sha256(), 0
        pending: asyncio.Future[Any] | None = None
        try:
            with tmp[1] as out:
                async for chunk in chunks:
                    size += len(chunk)
                    if max_bytes is not None and size > max_bytes:
                        raise OutputTooLarge(f"the file is larger than {max_bytes} bytes")
                    if pending is not None:
                        await pending
                    # Hash and write this chunk on two threads (both release the GIL) while the
                    # next one arrives: one after the other they capped uploads near 190 MB/s.
                    pending = asyncio.gather(asyncio.to_thread(digest.update, chunk),
                                             asyncio.to_thread(_write, out, chunk))
                if pending is not None:
                    await pending
                await asyncio.to_thread(_sync, out)
        except BaseException as exc:
            if pending is not None and not pending.done():
                await asyncio.gather(pending, return_exceptions=True)
            await asyncio.to_thread(_unlink, tmp[0])
            if isinstance(exc, OSError) and exc.errno in _FULL:
                raise StorageFull("no space left in the file store") from exc
            raise
        return Staged(digest.hexdigest(), size, str(tmp[0]))

    async def publish(self, staged: Staged) -> None:
        await asyncio.to_thread(self._publish, Path(staged.token), self.path(staged.sha256))

    async def discard(self, staged: Staged) -> None:
        await asyncio.to_thread(_unlink, Path(staged.token))

    async def remove(self, sha256: str, still_needed: Callable[[], Awaitable[bool]]) -> bool:
        # Move the blob aside, then check for a record that appeared meanwhile (a concurrent
        # upload of the same bytes inserts its record before it publishes): if one did, move it
        # back. Either order of the two leaves the blob in place for that record.
        path = self.path(sha256)
        tomb = path.with_name(f"{sha256}.{secrets.token_hex(6)}.removing")
        try:
            await asyncio.to_thread(os.replace, path, tomb)
        except FileNotFoundError:
            return False
        if await still_needed():
            await asyncio.to_thread(os.replace, tomb, path)
            return False
        await asyncio.to_thread(_unlink, tomb)
        return True

    @asynccontextmanager
    async def local_path(self, sha256: str) -> AsyncIterator[Path]:
        yield self.path(sha256)

    async def read(self, sha256: str, start: int, end: int) -> AsyncIterator[bytes]:
        handle = await asyncio.to_thread(open, self.path(sha256), "rb")
        try:
            await asyncio.to_thread(handle.seek, start)
            left = end - start
            while left > 0:
                chunk = await asyncio.to_thread(handle.read, min(CHUNK, left))
                if not chunk:
                    break  # the blob is shorter than its record says: stop, never loop
                left -= len(chunk)
                yield chunk
        finally:
            # Closing a file opened for reading does not block; on a thread it could fail to run
            # at all (a stop shutting the executor down) and leave the file open.
            handle.close()

    async def sweep_staged(self, older_than_s: float) -> int:
        """Remove staged files left by a crash more than ``older_than_s`` ago; how many."""
        return await asyncio.to_thread(self._sweep_staged, older_than_s)

    async def aclose(self) -> None:
        """Nothing to release: files are opened per call."""

    def _open_tmp(self) -> tuple[Path, IO[bytes]]:
        tmp_dir = self.root / TMP_DIR
        tmp_dir.mkdir(parents=True, exist_ok=True)
        path = tmp_dir / f"{secrets.token_hex(12)}.part"
        try:
            return path, open(path, "xb", buffering=0)
        except OSError as exc:
            if exc.errno in _FULL:
                raise StorageFull("no space left in the file store") from exc
            raise

    def _publish(self, tmp: Path, target: Path) -> None:
        try:
            target.parent.mkdir(exist_ok=True)
            os.replace(tmp, target)
            _sync_dir(target.parent)
        except OSError as exc:
            _unlink(tmp)
            if exc.errno in _FULL:
                raise StorageFull("no space left in the file store") from exc
            raise

    def _sweep_staged(self, older_than_s: float) -> int:
        removed = 0
        tmp_dir = self.root / TMP_DIR
        if not tmp_dir.is_dir():
            return 0
        for entry in tmp_dir.iterdir():
            try:
                if time.time() - entry.stat().st_mtime > older_than_s:
                    entry.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
        return removed


def _write(out: IO[bytes], chunk: bytes) -> None:
    view = memoryview(chunk)
    while view:
        written = out.write(view)
        view = view[written or 0:]


def _sync(out: IO[bytes]) -> None:
    out.flush()
    os.fsync(out.fileno())


def _sync_dir(path: Path) -> None:
    # The rename is durable only once the directory entry is on disk too.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink(path: Path) -> None:
    path.unlink(missing_ok=True)
