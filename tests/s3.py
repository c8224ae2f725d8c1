"""An S3-protocol server on loopback for tests: moto's standalone server, as its own process.

A separate process, not a thread of the test's: the bytes it keeps (in its memory) do not count
in the test process's memory, so a test can measure what an upload costs us.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from functools import cache
from typing import TYPE_CHECKING, Any

from tests.processes import free_port, process_env, wait_until

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

START_TIMEOUT = 30.0
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@contextmanager
def moto_server() -> Iterator[str]:
    """Start ``python -m moto.server`` on a free loopback port; yields its endpoint URL."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            env=process_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: proc.poll() is not None or _answers(endpoint), timeout=START_TIMEOUT, what="moto server up")
        assert proc.poll() is None, f"moto server exited with {proc.returncode}"
        yield endpoint
    finally:
        proc.kill()  # nothing of it is kept
        proc.wait()


def _answers(endpoint: str) -> bool:
    try:
        with _OPENER.open(f"{endpoint}/moto-api/", timeout=1):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def aws_env(endpoint: str) -> dict[str, str]:
    """The ``AWS_*`` variables a user sets for an S3-compatible server at ``endpoint``."""
    return {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "test-key", "AWS_SECRET_ACCESS_KEY": "test-secret",
            "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}


@cache
def session() -> Any:
    """One aiobotocore session for the tests' clients: a new one parses S3's service model again (~1 s)."""
    from aiobotocore.session import get_session

    return get_session()


@asynccontextmanager
async def s3_client(endpoint: str) -> AsyncIterator[S3Client]:
    """A client of our own for the test's checks (listing keys, creating buckets)."""
    env = aws_env(endpoint)
    async with session().create_client(
            "s3", endpoint_url=endpoint, region_name=env["AWS_REGION"], aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"]) as client:
        yield client


async def new_bucket(client: S3Client) -> str:
    """A new empty bucket with a random name (moto's buckets outlive a test)."""
    name = f"test-{secrets.token_hex(6)}"
    await client.create_bucket(Bucket=name)
    return name


async def keys(client: S3Client, bucket: str, prefix: str = "") -> list[str]:
    """Every object key under ``prefix``, sorted."""
    found: list[str] = []
    async for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        found.extend(item["Key"] for item in page.get("Contents", []))
    return sorted(found)


async def uploads(client: S3Client, bucket: str) -> list[Any]:
    """Multipart uploads begun and neither completed nor aborted."""
    return list((await client.list_multipart_uploads(Bucket=bucket)).get("Uploads", []))
