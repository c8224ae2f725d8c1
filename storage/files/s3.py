"""Blobs in an S3-compatible object store (``FILES_URL=s3://bucket/prefix``): files shared by machines.

Objects are named like the directory store's files: ``<prefix>/<sha[:2]>/<sha>``, so equal bytes
are stored once. An upload is hashed while it streams; the name is known only at its end, so:

- a stream shorter than one part (:data:`PART`) stays in memory and is written with one PUT at
  :meth:`S3Blobs.publish`;
- a longer one goes up as a multipart upload to ``<prefix>/.staged/<random>`` (one part in memory
  at a time), and :meth:`S3Blobs.publish` copies it to its name inside the object store (no bytes
  travel through us) unless an object of that name is there already.

Endpoint, region and credentials come from botocore's usual chain (``AWS_ENDPOINT_URL``,
``AWS_REGION``, ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``, an instance
role…). The client library (aiobotocore, the ``s3`` extra) is imported only when a store opens.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import secrets
import tempfile
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from graph_runtime.errors import StoreUnavailable
from nodes.errors import GraphRuntimeError, OutputTooLarge, StorageFull
from storage.errors import StorageError
from storage.files.blobs import CHUNK, Staged

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

PART = 8 * 1024 * 1024
"""Bytes per multipart part (S3's minimum is 5 MiB but for the last; 8 MiB is the AWS CLI's default)."""
COPY_MAX = 5 * 1024**3
"""The largest object one CopyObject copies; larger ones are copied part by part."""
STAGED = ".staged"
REMOVING = ".removing"
_HASH_ON_THREAD = 64 * 1024  # smaller chunks hash faster inline than a thread hop costs
_UNAVAILABLE_CODES = {"SlowDown", "InternalError", "ServiceUnavailable", "RequestTimeout", "500", "502", "503", "504"}
_FULL_CODES = {"XMinioStorageFull", "QuotaExceeded", "XMinioAdminBucketQuotaExceeded"}
_MISSING_CODES = {"NoSuchKey", "404", "NotFound"}


class S3ExtraMissing(GraphRuntimeError):
    """FILES_URL names an S3 bucket but the S3 client is not installed: pip install 'graph-runtime[s3]'."""

    code = "s3_extra_missing"


class ObjectStoreError(StorageError):
    """The object store (FILES_URL) refused an operation."""


@dataclass(frozen=True)
class S3Location:
    """A bucket and the key prefix under it, from ``s3://bucket/prefix``."""

    bucket: str
    prefix: str  # no leading or trailing slash; "" for the bucket's root

    @classmethod
    def parse(cls, url: str) -> S3Location:
        """The location ``url`` names.

        Raises:
            ValueError: not an ``s3://bucket[/prefix]`` URL (the message says what to write).
        """
        parts = urlsplit(url.strip())
        bucket = parts.netloc
        if parts.scheme != "s3" or not bucket or parts.query or parts.fragment:
            raise ValueError(f"{url!r} is not an s3://bucket/prefix URL (e.g. s3://my-bucket/graph-runtime)")
        if not (3 <= len(bucket) <= 63) or any(not (c.islower() or c.isdigit() or c in ".-") for c in bucket):
            raise ValueError(f"{bucket!r} is not an S3 bucket name (3-63 letters, digits, dots and hyphens)")
        return cls(bucket, parts.path.strip("/"))

    def key(self, name: str) -> str:
        """The object key of ``name`` under the prefix."""
        return f"{self.prefix}/{name}" if self.prefix else name


class S3Blobs:
    """A :class:`~storage.files.blobs.BlobStore` in a bucket, through an open aiobotocore client.

    Args:
        client: an S3 client (see :meth:`open`); closed by :meth:`aclose` when ``owner`` is given.
        location: the bucket and key prefix.
        owner: what closes the client.
    """

    copy_max = COPY_MAX  # a class attribute so a test can exercise the part-by-part copy on small objects

    def __init__(self, client: S3Client, location: S3Location, owner: AsyncExitStack | None = None) -> None:
        self.client = client
        self.location = location
        self._owner = owner
        self._small: dict[str, bytes] = {}  # staged uploads shorter than a part, by token

    @classmethod
    async def open(cls, url: str, *, path_style: bool = False, session: Any = None) -> S3Blobs:
        """Connect to the bucket ``url`` names and check that it is there and ours to use.

        ``session``: an aiobotocore session to reuse (it keeps the parsed service model: a new
        one costs a second of CPU), else a new one.

        Raises:
            S3ExtraMissing: aiobotocore is not installed.
            ObjectStoreError: no such bucket, no credentials, or access refused.
            StoreUnavailable: the endpoint does not answer.
        """
        location = S3Location.parse(url)
        try:
            from aiobotocore.config import AioConfig
            from aiobotocore.session import get_session
        except ImportError as exc:
            raise S3ExtraMissing() from exc
        config = AioConfig(
            s3={"addressing_style": "path" if path_style else "auto"},  # MinIO-style servers need path
            retries={"mode": "standard", "max_attempts": 3},
            connect_timeout=10, read_timeout=60,
            # Checksums only where S3 requires them: newer botocore adds CRC headers that several
            # S3-compatible servers refuse, and every blob is checked by its SHA-256 name anyway.
            request_checksum_calculation="when_required", response_checksum_validation="when_required",
        )
        stack = AsyncExitStack()
        client = await stack.enter_async_context((session or get_session()).create_client("s3", config=config))
        try:
            async with _translated(f"s3://{location.bucket}"):
                await client.head_bucket(Bucket=location.bucket)
        except BaseException:
            await stack.aclose()
            raise
        return cls(client, location, stack)

    async def aclose(self) -> None:
        """Close the client (when this store opened it)."""
        if self._owner is not None:
            await self._owner.aclose()

    def key(self, sha256: str) -> str:
        """The object key of the blob with this hash."""
        return self.location.key(f"{sha256[:2]}/{sha256}")

    async def stage(self, chunks: AsyncIterable[bytes], max_bytes: int | None) -> Staged:
        digest, size, buffer = hashlib.sha256(), 0, bytearray()
        upload: _Multipart | None = None
        try:
            async for chunk in chunks:
                size += len(chunk)
                if max_bytes is not None and size > max_bytes:
                    raise OutputTooLarge(f"the file is larger than {max_bytes} bytes")
                if len(chunk) >= _HASH_ON_THREAD:
                    await asyncio.to_thread(digest.update, chunk)
                else:
                    digest.update(chunk)
                buffer += chunk
                while len(buffer) >= PART:
                    upload = upload or await _Multipart.begin(self, self.location.key(f"{STAGED}/{_token()}"))
                    await upload.send(bytes(buffer[:PART]))
                    del buffer[:PART]
            if upload is None:
                token = _token()
                self._small[token] = bytes(buffer)
                return Staged(digest.hexdigest(), size, token)
            if buffer:
                await upload.send(bytes(buffer))
            await upload.complete()
        except BaseException:
            if upload is not None:
                await asyncio.shield(upload.abort())
            raise
        return Staged(digest.hexdigest(), size, upload.key)

    async def publish(self, staged: Staged) -> None:
        target = self.key(staged.sha256)
        small = self._small.pop(staged.token, None)
        async with _translated(target):
            if small is not None:
                await self.client.put_object(Bucket=self.location.bucket, Key=target, Body=small)
                return
            if await self._size(target) is None:
                await self._copy(staged.token, target, staged.size)
            await self.client.delete_object(Bucket=self.location.bucket, Key=staged.token)

    async def discard(self, staged: Staged) -> None:
        if self._small.pop(staged.token, None) is None:
            async with _translated(staged.token):
                await self.client.delete_object(Bucket=self.location.bucket, Key=staged.token)

    async def remove(self, sha256: str, still_needed: Callable[[], Awaitable[bool]]) -> bool:
        # As the directory store does: set the object aside, then look for a record that appeared
        # meanwhile (an upload of equal bytes inserts its record before it publishes, and its
        # publish may have found this object and skipped writing); if one did, put it back.
        key, bucket = self.key(sha256), self.location.bucket
        tomb = self.location.key(f"{REMOVING}/{sha256}.{_token()}")
        async with _translated(key):
            size = await self._size(key)
            if size is None:
                return False
            await self._copy(key, tomb, size)
            await self.client.delete_object(Bucket=bucket, Key=key)
            needed = True  # until the database says otherwise: if it cannot (it raises), the bytes stay
            try:
                needed = await still_needed()
            finally:
                if needed:
                    await self._copy(tomb, key, size)
                await self.client.delete_object(Bucket=bucket, Key=tomb)
        return not needed

    @asynccontextmanager
    async def local_path(self, sha256: str) -> AsyncIterator[Path]:
        # FFmpeg and Pillow want a path: download to a temporary file, removed when the block ends.
        fd, name = await asyncio.to_thread(tempfile.mkstemp, prefix="graph-runtime-", suffix=".blob")
        path = Path(name)
        try:
            with os.fdopen(fd, "wb") as out:
                async for chunk in self._get(sha256, None):
                    await asyncio.to_thread(out.write, chunk)
            yield path
        finally:
            await asyncio.to_thread(path.unlink, missing_ok=True)

    async def read(self, sha256: str, start: int, end: int) -> AsyncIterator[bytes]:
        if end <= start:
            return
        async for chunk in self._get(sha256, f"bytes={start}-{end - 1}"):
            yield chunk

    async def sweep_staged(self, older_than_s: float) -> int:
        """Remove staged objects and unfinished multipart uploads a crash left; how many."""
        cutoff = datetime.now(UTC) - timedelta(seconds=older_than_s)
        bucket, prefix = self.location.bucket, self.location.key(f"{STAGED}/")
        removed = 0
        async with _translated(prefix):
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            async for page in pages:
                for item in page.get("Contents", []):
                    if item["LastModified"] < cutoff:
                        await self.client.delete_object(Bucket=bucket, Key=item["Key"])
                        removed += 1
            uploads = await self.client.list_multipart_uploads(Bucket=bucket, Prefix=prefix)
            for upload in uploads.get("Uploads", []):
                if upload["Initiated"] < cutoff:
                    await self.client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"],
                                                             UploadId=upload["UploadId"])
                    removed += 1
        return removed

    async def _get(self, sha256: str, byte_range: str | None) -> AsyncIterator[bytes]:
        key = self.key(sha256)
        async with _translated(key):
            bucket = self.location.bucket
            answer = await (self.client.get_object(Bucket=bucket, Key=key, Range=byte_range) if byte_range
                            else self.client.get_object(Bucket=bucket, Key=key))
            async with answer["Body"] as body:
                async for chunk in body.iter_chunks(CHUNK):
                    yield chunk

    async def _size(self, key: str) -> int | None:
        try:
            head = await self.client.head_object(Bucket=self.location.bucket, Key=key)
        except Exception as exc:
            if _code(exc) in _MISSING_CODES:
                return None
            raise
        return head["ContentLength"]

    async def _copy(self, source: str, target: str, size: int) -> None:
        bucket = self.location.bucket
        if size <= self.copy_max:
            await self.client.copy_object(Bucket=bucket, Key=target, CopySource={"Bucket": bucket, "Key": source})
            return
        upload = await _Multipart.begin(self, target)
        try:
            for first in range(0, size, self.copy_max):
                last = min(first + self.copy_max, size) - 1
                await upload.copy(source, f"bytes={first}-{last}")
            await upload.complete()
        except BaseException:
            await asyncio.shield(upload.abort())
            raise


class _Multipart:
    """One multipart upload: parts sent (or copied) in order, then completed or aborted."""

    def __init__(self, blobs: S3Blobs, key: str, upload_id: str) -> None:
        self.blobs, self.key, self.upload_id = blobs, key, upload_id
        self.parts: list[dict[str, Any]] = []

    @classmethod
    async def begin(cls, blobs: S3Blobs, key: str) -> _Multipart:
        async with _translated(key):
            answer = await blobs.client.create_multipart_upload(Bucket=blobs.location.bucket, Key=key)
        return cls(blobs, key, answer["UploadId"])

    async def send(self, data: bytes) -> None:
        async with _translated(self.key):
            answer = await self.blobs.client.upload_part(Bucket=self.blobs.location.bucket, Key=self.key,
                                                         UploadId=self.upload_id, PartNumber=len(self.parts) + 1,
                                                         Body=data)
        self.parts.append({"PartNumber": len(self.parts) + 1, "ETag": answer["ETag"]})

    async def copy(self, source: str, byte_range: str) -> None:
        bucket = self.blobs.location.bucket
        answer = await self.blobs.client.upload_part_copy(
            Bucket=bucket, Key=self.key, UploadId=self.upload_id, PartNumber=len(self.parts) + 1,
            CopySource={"Bucket": bucket, "Key": source}, CopySourceRange=byte_range)
        self.parts.append({"PartNumber": len(self.parts) + 1, "ETag": answer["CopyPartResult"]["ETag"]})

    async def complete(self) -> None:
        async with _translated(self.key):
            await self.blobs.client.complete_multipart_upload(
                Bucket=self.blobs.location.bucket, Key=self.key, UploadId=self.upload_id,
                MultipartUpload={"Parts": self.parts})  # type: ignore[typeddict-item]

    async def abort(self) -> None:
        # Best effort: an upload left behind is aborted by the retention sweep (sweep_staged).
        with contextlib.suppress(GraphRuntimeError):
            async with _translated(self.key):
                await self.blobs.client.abort_multipart_upload(Bucket=self.blobs.location.bucket, Key=self.key,
                                                               UploadId=self.upload_id)


def _token() -> str:
    return secrets.token_hex(12)


def _code(exc: BaseException) -> str | None:
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return None
    return str(response.get("Error", {}).get("Code") or response.get("ResponseMetadata", {}).get("HTTPStatusCode"))


@asynccontextmanager
async def _translated(key: str) -> AsyncIterator[None]:
    """botocore's and aiohttp's errors as ours: a missing object is ``FileNotFoundError`` (as on disk)."""
    from aiohttp import ClientError as HttpError
    from botocore import exceptions as boto

    try:
        yield
    except FileNotFoundError:
        raise  # a missing object, said already by an inner block (it is an OSError too)
    except boto.ClientError as exc:
        raise _client_error(exc, key) from exc
    except (boto.NoCredentialsError, boto.PartialCredentialsError) as exc:
        raise ObjectStoreError("no credentials for the object store: set AWS_ACCESS_KEY_ID and "
                               "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)") from exc
    except (boto.ConnectionError, boto.HTTPClientError, HttpError, OSError) as exc:  # refused, reset, timed out, DNS
        raise StoreUnavailable(f"the object store does not answer ({key}): {exc}") from exc
    except boto.BotoCoreError as exc:
        raise ObjectStoreError(f"the object store client failed ({key}): {exc}") from exc


def _client_error(exc: Any, key: str) -> BaseException:
    code = _code(exc)
    message = exc.response.get("Error", {}).get("Message") or code
    if code == "NoSuchBucket" or (code == "404" and key.startswith("s3://")):  # HEAD answers have no code
        return ObjectStoreError(f"the bucket of {key} does not exist: create it, or fix GRAPH_RUNTIME_FILES_URL")
    if code in _MISSING_CODES:
        return FileNotFoundError(f"no object {key!r} in the object store")
    if code in _FULL_CODES:
        return StorageFull(f"the object store is full: {message}")
    if code in _UNAVAILABLE_CODES:
        return StoreUnavailable(f"the object store is unavailable ({key}): {code}: {message}")
    return ObjectStoreError(f"the object store refused an operation on {key}: {code}: {message}")
