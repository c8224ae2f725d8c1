"""The files API with FILES_URL: two servers on one database and one bucket share their files.

The bucket is on moto's S3 server (its own process on loopback); the servers are the production
app, configured as a user would: GRAPH_RUNTIME_FILES_URL and the AWS_* variables.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from PIL import Image

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


@pytest.fixture
async def servers(aiohttp_client: Any, settings: Settings, client: S3Client,
                  tmp_path: Path) -> tuple[Api, Api, str]:
    """Two servers on one database and one bucket, each with its own FILES_DIR (as on two machines)."""
    bucket = await new_bucket(client)
    apis = []
    for name in ("api", "gpu-box"):
        configured = settings.model_copy(update={"files_url": f"s3://{bucket}/graph-runtime",
                                                 "files_s3_path_style": True, "files_dir": tmp_path / name})
        served = await aiohttp_client(create_app(configured, registry=registry_with_test_types()))
        _, token = await auth.issue_key(served.server.app[SERVICES].repo, f"admin-{name}", "admin")
        apis.append(Api(served, token))
    return apis[0], apis[1], bucket


async def test_a_file_uploaded_to_one_server_downloads_from_another(servers: tuple[Api, Api, str], client: S3Client,
                                                                    tmp_path: Path) -> None:
    here, there, bucket = servers
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


async def test_an_object_deleted_behind_our_back_is_a_404_that_says_so(servers: tuple[Api, Api, str],
                                                                      client: S3Client) -> None:
    here, _, bucket = servers
    uploaded = (await here.json("POST", "/api/v1/files?name=x.txt", 201, data=b"soon gone"))["file"]
    await client.delete_object(Bucket=bucket, Key=f"graph-runtime/{uploaded['sha256'][:2]}/{uploaded['sha256']}")
    answer = await here.json("GET", f"/api/v1/files/{uploaded['$file']}", 404)
    assert "missing from the store" in answer["error"]["message"]


async def test_a_flow_reads_and_writes_its_files_in_the_bucket(servers: tuple[Api, Api, str], client: S3Client) -> None:
    here, there, bucket = servers
    form = aiohttp.FormData()
    form.add_field("node_settings.start.data.photo", _photo(), filename="shoe.png", content_type="image/png")

    task = await here.json("POST", "/api/v1/flow/product-photo-sizes/execute", 201, data=form, params={"wait": "30"})

    assert task["status_name"] == "succeeded", task["error"]
    made = [task["result"][name]["image"] for name in ("thumbnail", "medium", "large")]
    stored = await keys(client, bucket)
    assert all(f"graph-runtime/{file['sha256'][:2]}/{file['sha256']}" in stored for file in made)
    link = urlsplit(made[0]["url"])
    thumbnail = await there.client.get(f"{link.path}?{link.query}")
    assert Image.open(io.BytesIO(await thumbnail.read())).size == (150, 150)


def _photo() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (400, 250), (200, 40, 40)).save(out, "PNG")
    return out.getvalue()


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
