"""Files as values (SPEC §7): what a node sees of a file, and the store it reads and writes.

A file travels through settings, outputs and results as a **file value**, a JSON object
``{"$file": "<id>", "name", "content_type", "size", "sha256"}``; its bytes live in the file store,
never inside JSON. A node declares a file parameter with the :class:`File` type::

    class Params(BaseModel):
        image: File

and gets a :class:`File` whose bytes it reads through ``ctx.files`` (:class:`FileStore`). Before
the node runs, the runtime has turned whatever the request gave — a file value, a bare
``{"$file": id}``, or an ``http(s)`` URL (fetched, SSRF-guarded and size-capped) — into a
complete :class:`File`. A node returns new files by storing bytes with ``ctx.files`` and putting
the :class:`File` it gets back into its output.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

FILE_KEY = "$file"


class File(BaseModel):
    """A stored file, as nodes and the wire see it (the ``$file`` value).

    Attributes:
        id: the file's id in the store (``$file`` on the wire).
        name: a file name for downloads, e.g. ``cat.jpg``.
        content_type: its media type, e.g. ``image/jpeg``.
        size: its length in bytes.
        sha256: the hex SHA-256 of its bytes (the store keeps equal bytes once).
    """

    # serialize_by_alias: a File in a node's Output is stored (model_dump) as the "$file" value.
    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="ignore", serialize_by_alias=True)

    id: str = Field(alias="$file", min_length=1, max_length=128)
    name: str = "file"
    content_type: str = "application/octet-stream"
    size: int = Field(default=0, ge=0)
    sha256: str = ""

    def as_value(self) -> dict[str, Any]:
        """The JSON file value (``url`` is added by the API, never stored)."""
        return {FILE_KEY: self.id, "name": self.name, "content_type": self.content_type, "size": self.size,
                "sha256": self.sha256}


def is_file_value(value: Any) -> bool:
    """Whether ``value`` is a file value (a JSON object with a ``$file`` key)."""
    return isinstance(value, dict) and FILE_KEY in value


def file_values(value: Any) -> Iterator[dict[str, Any]]:
    """Every file value inside ``value``, depth-first in key order (a generator)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if is_file_value(item):
            yield item
        elif isinstance(item, dict):
            stack.extend(reversed(list(item.values())))
        elif isinstance(item, list):
            stack.extend(reversed(item))


class FileNotFound(LookupError):
    """No file has this id."""


class FileStore(Protocol):
    """Where file bytes live. Given to every node as ``ctx.files``.

    Implementations: a content-addressed directory (the default) and, for several machines,
    an S3-compatible object store. Every method is safe to call from the event loop: blocking
    I/O happens on threads.
    """

    async def put(self, chunks: AsyncIterable[bytes], *, name: str, content_type: str,
                  max_bytes: int | None = None) -> File:
        """Store a stream of bytes as a new file.

        Raises:
            nodes.errors.StorageFull: the disk (or bucket) is full; nothing was kept.
            nodes.errors.OutputTooLarge: more than ``max_bytes`` arrived; nothing was kept.
        """

    async def put_bytes(self, data: bytes, *, name: str, content_type: str) -> File:
        """Store ``data`` as a new file."""

    async def put_path(self, path: Path, *, name: str, content_type: str) -> File:
        """Store the file at ``path`` (a codec's output) as a new file; ``path`` is left as it is."""

    async def get(self, file_id: str) -> File:
        """The file with this id.

        Raises:
            FileNotFound: no such file.
        """

    def local_path(self, file: File) -> AbstractAsyncContextManager[Path]:
        """A local path holding the file's bytes while the block runs (for Pillow, FFmpeg…).

        The directory store yields its own blob (read it, never write it); a remote store
        downloads to a temporary file first.
        """

    def read(self, file: File, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """The file's bytes from ``start`` up to ``end`` (exclusive), in chunks."""
