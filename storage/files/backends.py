"""The file store a process uses, chosen once at start: a directory (``FILES_DIR``) or a bucket (``FILES_URL``)."""

from __future__ import annotations

import logging
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from storage.files.store import DEFAULT_MAX_BYTES, BlobFileStore, LocalFileStore

log = logging.getLogger(__name__)


async def open_file_store(engine: AsyncEngine, *, files_dir: Path, files_url: str | None = None,
                          s3_path_style: bool = False, max_bytes: int = DEFAULT_MAX_BYTES) -> BlobFileStore:
    """The file store over ``files_url``'s bucket when one is given, else over ``files_dir``.

    Close it with :meth:`BlobFileStore.aclose`.

    Raises:
        storage.files.s3.S3ExtraMissing: an ``s3://`` URL without the ``s3`` extra installed.
        storage.files.s3.ObjectStoreError: no such bucket, no credentials, or access refused.
        graph_runtime.errors.StoreUnavailable: the object store does not answer.
    """
    if not files_url:
        return LocalFileStore(files_dir, engine, max_bytes=max_bytes)
    from storage.files.s3 import S3Blobs  # its client library is the s3 extra's

    blobs = await S3Blobs.open(files_url, path_style=s3_path_style)
    log.info("files in s3://%s/%s", blobs.location.bucket, blobs.location.prefix,
             extra={"action": "file_store_opened"})
    return BlobFileStore(blobs, engine, max_bytes=max_bytes)
