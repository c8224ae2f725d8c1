"""The files API with FILES_URL: two servers on one database and one bucket share their files.

The bucket is on moto's S3 server (its own process on loopback); the servers are the production
app, configured as a user would: GRAPH_RUNTIME_FILES_URL and the AWS_* variables.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest

from http_api import auth
from http_api.app import create_app
from http_api.body import SERVICES
from http_api.settings import Settings
from tests.conftest import SAMPLE_FLOWS, Api
from tests.processes import COMMAND_TIMEOUT, free_port, process_env, sqlite_url
from tests.s3 import aws_env, keys, moto_server, new_bucket, s3_client
from tests.support import registry_with_test_types

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture
async def client(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[S3Client]:
    for name, value in aws_env(endpoint).items():
        monkeypatch.setenv(name, value)
    async with s3_client(endpoint) as s3:
        yield s3


async def test_a_file_uploaded_to_one_server_downloads_from_another(aiohttp_client: Any, settings: Settings,
                                                                    client: S3Client, tmp_path: Path) -> None:
    bucket = await new_bucket(client)
    apis = []
    for name in ("api", "gpu-box"):  # each its own FILES_DIR, as on two machines: only the bucket is shared
        configured = settings.model_copy(update={"files_url": f"s3://{bucket}/graph-runtime",
                                                 "files_s3_path_style": True, "files_dir": tmp_path / name})
        served = await aiohttp_client(create_app(configured, registry=registry_with_test_types()))
        _, token = await auth.issue_key(served.server.app[SERVICES].repo, f"admin-{name}", "admin")
        apis.append(Api(served, token))
    here, there = apis
    data = os.urandom(300_000)

    uploaded = (await here.json("POST", "/api/v1/files?name=scan.bin", 201, data=data,
                                headers={"Content-Type": "application/octet-stream"}))["file"]
    assert await keys(client, bucket) == [f"graph-runtime/{uploaded['sha256'][:2]}/{uploaded['sha256']}"]

    whole = await there.request("GET", f"/api/v1/files/{uploaded['$file']}")
    assert whole.status == 200 and await whole.read() == data
    assert whole.headers["ETag"] == f'"{uploaded["sha256"]}"'
    part = await there.request("GET", f"/api/v1/files/{uploaded['$file']}", headers={"Range": "bytes=1000-1999"})
    assert part.status == 206 and await part.read() == data[1000:2000]
    assert part.headers["Content-Range"] == f"bytes 1000-1999/{len(data)}"
    link = urlsplit(uploaded["url"])  # no key: the signature is the permission
    signed = await there.client.get(f"{link.path}?{link.query}")
    assert signed.status == 200 and await signed.read() == data

    deleted = await there.request("DELETE", f"/api/v1/files/{uploaded['$file']}")
    assert deleted.status == 204 and await keys(client, bucket) == []
    assert (await here.request("GET", f"/api/v1/files/{uploaded['$file']}")).status == 404
    assert not (tmp_path / "api").exists() and not (tmp_path / "gpu-box").exists()


def test_without_the_s3_extra_the_start_names_it(tmp_path: Path) -> None:
    # The server as installed without the extra: aiobotocore cannot be imported.
    code = "import sys; sys.modules['aiobotocore'] = None; from http_api.cli import main; sys.exit(main())"
    result = subprocess.run(
        [sys.executable, "-c", code, "serve", "--db", sqlite_url(tmp_path / "g.db"), "--port", str(free_port()),
         "--flows-dir", str(SAMPLE_FLOWS)],
        cwd=tmp_path, env=process_env(GRAPH_RUNTIME_FILES_URL="s3://bucket/x"), capture_output=True, text=True,
        timeout=COMMAND_TIMEOUT, check=False)
    assert result.returncode == 1, result.stderr
    assert "pip install 'graph-runtime[s3]'" in result.stderr and "Traceback" not in result.stderr
    assert "GRAPH_RUNTIME_KEY=" not in result.stdout and not (tmp_path / "g.db").exists()  # nothing served or written
