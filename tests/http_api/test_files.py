"""The files API through a real server: uploads (multipart as curl sends it, raw), downloads with
ranges and ETags, signed links, delete, limits (413, 507) and flat memory."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from http_api import auth
from http_api.app import create_app
from http_api.body import SERVICES
from http_api.settings import Settings
from tests.conftest import Api
from tests.support import registry_with_test_types

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40


@pytest_asyncio.fixture
async def small_api(aiohttp_client: Any, settings: Settings) -> AsyncIterator[Api]:
    """A server that takes files up to 64 KiB and bodies up to 4 KiB."""
    small = settings.model_copy(update={"max_file_bytes": 64 * 1024, "max_body_bytes": 4096})
    client = await aiohttp_client(create_app(small, registry=registry_with_test_types()))
    _, token = await auth.issue_key(client.server.app[SERVICES].repo, "test-admin", "admin")
    yield Api(client, token)


async def upload(api: Api, data: bytes | io.BytesIO, name: str = "cat.png", content_type: str = "image/png",
                 status: int = 201, **kwargs: Any) -> Any:
    form = aiohttp.FormData()
    form.add_field("file", data, filename=name, content_type=content_type)
    return await api.json("POST", "/api/v1/files", status, data=form, **kwargs)


def blobs(root: Path) -> list[Path]:
    """Every file under the store's directory, staged ones included."""
    return sorted(p for p in root.rglob("*") if p.is_file())


async def file_count(api: Api) -> int:
    import sqlalchemy as sa

    async with api.services.repo.engine.connect() as conn:
        return (await conn.execute(sa.text("SELECT count(*) FROM file"))).scalar_one()


async def test_multipart_upload_answers_a_file_value_with_a_url(api: Api) -> None:
    answer = await upload(api, PNG)
    file = answer["file"]
    assert file["name"] == "cat.png" and file["content_type"] == "image/png" and file["size"] == len(PNG)
    assert file["sha256"] == hashlib.sha256(PNG).hexdigest()
    assert len(file["$file"]) == 22 and file["url"].startswith(f"/api/v1/files/{file['$file']}?expires=")
    response = await api.request("GET", f"/api/v1/files/{file['$file']}")
    assert response.status == 200 and await response.read() == PNG
    assert response.headers["Content-Type"] == "image/png"
    assert response.headers["Content-Length"] == str(len(PNG))
    assert response.headers["ETag"] == f'"{file["sha256"]}"'
    assert response.headers["Accept-Ranges"] == "bytes"
    assert response.headers["Content-Disposition"] == 'attachment; filename="cat.png"'


async def test_hand_built_multipart_as_curl_sends_it(api: Api) -> None:
    boundary = "------------------------d74496d66958873e"
    payload = (f"--{boundary}\r\n"
               'Content-Disposition: form-data; name="file"; filename="résumé 1.txt"\r\n'
               "Content-Type: text/plain\r\n\r\n").encode() + b"hello\r\nworld" + f"\r\n--{boundary}--\r\n".encode()
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    file = (await api.json("POST", "/api/v1/files", 201, data=payload, headers=headers))["file"]
    assert file["name"] == "résumé 1.txt" and file["content_type"] == "text/plain" and file["size"] == 12
    response = await api.request("GET", f"/api/v1/files/{file['$file']}")
    assert await response.read() == b"hello\r\nworld"
    assert response.headers["Content-Disposition"] == (
        "attachment; filename=\"r_sum_ 1.txt\"; filename*=UTF-8''r%C3%A9sum%C3%A9%201.txt")


async def test_curl_upload_with_dash_f(api: Api) -> None:
    port = api.client.server.port
    path = api.client.server.app[SERVICES].settings.files_dir.parent / "photo.png"
    path.write_bytes(PNG)
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    curl = await asyncio.create_subprocess_exec(
        "curl", "-sS", "-H", f"Authorization: Basic {api.token}", "-F", f"file=@{path}",
        f"http://127.0.0.1:{port}/api/v1/files", stdout=asyncio.subprocess.PIPE)
    out, _ = await asyncio.wait_for(curl.communicate(), 20)
    assert '"name":"photo.png"' in out.decode() and '"content_type":"image/png"' in out.decode(), out


async def test_raw_upload_takes_its_type_and_name_from_the_request(api: Api) -> None:
    file = (await api.json("POST", "/api/v1/files?name=notes.md", 201, data=b"# hi",
                           headers={"Content-Type": "text/markdown"}))["file"]
    assert (file["name"], file["content_type"], file["size"]) == ("notes.md", "text/markdown", 4)
    unnamed = (await api.json("POST", "/api/v1/files", 201, data=b"\x00\x01"))["file"]
    assert unnamed["name"] == "file" and unnamed["content_type"] == "application/octet-stream"


async def test_the_same_bytes_are_stored_once(api: Api) -> None:
    first = (await upload(api, PNG, "a.png"))["file"]
    second = (await upload(api, PNG, "b.png"))["file"]
    assert first["$file"] != second["$file"] and first["sha256"] == second["sha256"]
    root = api.services.settings.files_dir
    assert [p.name for p in blobs(root)] == [first["sha256"]]
    assert (await api.request("DELETE", f"/api/v1/files/{first['$file']}")).status == 204
    assert [p.name for p in blobs(root)] == [first["sha256"]]  # b.png still needs it
    response = await api.request("GET", f"/api/v1/files/{second['$file']}")
    assert await response.read() == PNG
    await api.request("DELETE", f"/api/v1/files/{second['$file']}")
    assert blobs(root) == []


async def test_over_the_file_limit_is_413_and_nothing_is_kept(small_api: Api) -> None:
    big = os.urandom(64 * 1024 + 1)
    error = (await upload(small_api, big, status=413))["error"]
    assert error["code"] == "file_too_large" and error["field"] == "file"

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: the limit is found while streaming
        for start in range(0, len(big), 8192):
            yield big[start:start + 8192]

    error = (await small_api.json("POST", "/api/v1/files", 413, data=chunked()))["error"]
    assert error["code"] == "file_too_large"
    assert await file_count(small_api) == 0
    assert blobs(small_api.services.settings.files_dir) == []


async def test_uploads_are_not_capped_by_the_body_limit(small_api: Api) -> None:
    data = os.urandom(60 * 1024)  # over MAX_BODY_BYTES (4 KiB), under MAX_FILE_BYTES (64 KiB)
    assert (await upload(small_api, data))["file"]["size"] == len(data)
    raw = await small_api.json("POST", "/api/v1/files", 201, data=data)
    assert raw["file"]["sha256"] == hashlib.sha256(data).hexdigest()


def multipart(*names: str) -> tuple[bytes, dict[str, str]]:
    """A multipart body with one small part per name, framed as curl frames it."""
    boundary = "------------------------4f1d2c3b5a697887"
    parts = b"".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{name}.bin"\r\n'
                     f"Content-Type: application/octet-stream\r\n\r\n{name}-bytes\r\n".encode() for name in names)
    return parts + f"--{boundary}--\r\n".encode(), {"Content-Type": f"multipart/form-data; boundary={boundary}"}


@pytest.mark.parametrize(("names", "field"), [(["other"], "other"), ([], "file"), (["file", "more"], "more"),
                                              (["other", "file"], "other"), (["file", "file"], "file")])
async def test_a_multipart_body_must_hold_one_file_part(api: Api, names: list[str], field: str) -> None:
    payload, headers = multipart(*names)
    error = (await api.json("POST", "/api/v1/files", 422, data=payload, headers=headers))["error"]
    assert error["field"] == field
    assert await file_count(api) == 0 and blobs(api.services.settings.files_dir) == []


async def test_a_malformed_multipart_body_is_422(api: Api) -> None:
    boundary = "4bea7452f2ee0b8418ae8c1020a88206"  # a part with no headers at all (schemathesis found it)
    payload = f"--{boundary}\r\n--{boundary}--\r\n".encode()
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    error = (await api.json("POST", "/api/v1/files", 422, data=payload, headers=headers))["error"]
    assert error["field"] == "file" and await file_count(api) == 0


async def test_a_bad_name_or_encoding_is_refused(api: Api) -> None:
    error = (await api.json("POST", "/api/v1/files?name=../etc/passwd", 422, data=b"x"))["error"]
    assert error["field"] == "name"
    error = (await api.json("POST", "/api/v1/files", 415, data=b"x", headers={"Content-Encoding": "gzip"}))["error"]
    assert error["field"] == "Content-Encoding"
    assert await file_count(api) == 0


async def test_execute_scope_uploads_and_downloads(api: Api) -> None:
    token = await api.new_key("execute")
    file = (await upload(api, PNG, token=token))["file"]
    assert (await api.request("GET", f"/api/v1/files/{file['$file']}", token=token)).status == 200
    assert (await api.client.get(f"/api/v1/files/{file['$file']}")).status == 401


async def test_ranges_etags_and_head(api: Api) -> None:
    data = bytes(range(256)) * 4
    file = (await upload(api, data))["file"]
    path = f"/api/v1/files/{file['$file']}"

    async def get(**headers: str) -> aiohttp.ClientResponse:
        return await api.request("GET", path, headers=headers)

    part = await get(Range="bytes=10-19")
    assert part.status == 206 and await part.read() == data[10:20]
    assert part.headers["Content-Range"] == f"bytes 10-19/{len(data)}" and part.headers["Content-Length"] == "10"
    tail = await get(Range="bytes=-5")
    assert tail.status == 206 and await tail.read() == data[-5:]
    rest = await get(Range="bytes=1000-")
    assert rest.status == 206 and await rest.read() == data[1000:]
    clipped = await get(Range="bytes=1020-5000")
    assert clipped.status == 206 and await clipped.read() == data[1020:]
    beyond = await get(Range="bytes=1024-")
    assert beyond.status == 416 and beyond.headers["Content-Range"] == "bytes */1024"
    assert (await beyond.json())["error"]["field"] == "Range"
    several = await get(Range="bytes=0-1,5-6")  # not supported: the whole file, as RFC 9110 allows
    assert several.status == 200 and await several.read() == data
    stale = await get(Range="bytes=0-1", **{"If-Range": '"other"'})
    assert stale.status == 200
    etag = part.headers["ETag"]
    cached = await get(**{"If-None-Match": etag})
    assert cached.status == 304 and cached.headers["ETag"] == etag and await cached.read() == b""
    assert (await get(**{"If-None-Match": '"nope", W/' + etag})).status == 304
    assert (await get(**{"If-None-Match": '"nope"'})).status == 200
    head = await api.request("HEAD", path)
    assert head.status == 200 and head.headers["Content-Length"] == "1024" and await head.read() == b""


async def test_an_empty_file(api: Api) -> None:
    error = (await api.json("POST", "/api/v1/files?name=empty", 422, data=b""))["error"]
    assert error["field"] == "file"  # no body at all: most likely a mistake, as SPEC's 422 would have it
    file = (await api.services.files.put_bytes(b"", name="empty", content_type="text/plain")).as_value()
    response = await api.request("GET", f"/api/v1/files/{file['$file']}")
    assert response.status == 200 and await response.read() == b"" and response.headers["Content-Length"] == "0"
    assert (await api.request("GET", f"/api/v1/files/{file['$file']}", headers={"Range": "bytes=-1"})).status == 416


async def test_signed_links_work_without_a_key_until_they_expire(api: Api) -> None:
    file = (await upload(api, PNG))["file"]
    other = (await upload(api, b"other bytes", "other.txt", "text/plain"))["file"]
    response = await api.client.get(file["url"])  # no Authorization header
    assert response.status == 200 and await response.read() == PNG
    links = api.services.links
    expired = links.url_for(file, now=time.time() - links.ttl_s - 1)
    answer = await api.client.get(expired)
    assert answer.status == 403 and (await answer.json())["error"]["code"] == "link_expired"
    tampered = file["url"][:-1] + ("0" if file["url"][-1] != "0" else "1")
    later = file["url"].replace("expires=", "expires=9")
    for_other = file["url"].replace(file["$file"], other["$file"])
    for url in (tampered, later, for_other, f"/api/v1/files/{file['$file']}?signature=zz&expires=x"):
        answer = await api.client.get(url)
        assert answer.status == 403, url
        assert (await answer.json())["error"]["code"] == "link_invalid"
    assert (await api.client.get(f"/api/v1/files/{file['$file']}?expires=1")).status == 401  # no signature


async def test_delete_needs_an_admin_key(api: Api) -> None:
    file = (await upload(api, PNG))["file"]
    path = f"/api/v1/files/{file['$file']}"
    execute = await api.new_key("execute")
    assert (await api.json("DELETE", path, 403, token=execute))["error"]["code"] == "forbidden"
    assert (await api.request("DELETE", path)).status == 204
    assert (await api.json("GET", path, 404))["error"]["code"] == "not_found"
    assert (await api.json("DELETE", path, 404))["error"]["code"] == "not_found"
    assert (await api.client.get(file["url"])).status == 404  # a valid link to a deleted file


async def test_unknown_files_are_404(api: Api) -> None:
    assert (await api.json("GET", "/api/v1/files/nope", 404))["error"]["code"] == "not_found"
    assert (await api.json("GET", "/api/v1/files/" + "x" * 300, 404))["error"]["code"] == "not_found"


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs (needs root and mount; skipped otherwise)."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


async def test_a_full_disk_is_507_and_corrupts_nothing(aiohttp_client: Any, settings: Settings,
                                                       tiny_disk: Path) -> None:
    full = settings.model_copy(update={"files_dir": tiny_disk / "files"})
    client = await aiohttp_client(create_app(full, registry=registry_with_test_types()))
    _, token = await auth.issue_key(client.server.app[SERVICES].repo, "test-admin", "admin")
    api = Api(client, token)
    kept = (await upload(api, b"small and safe"))["file"]
    error = (await upload(api, io.BytesIO(os.urandom(2 * 1024 * 1024)), status=507))["error"]
    assert error["code"] == "storage_full"
    assert await file_count(api) == 1
    assert [p.name for p in blobs(tiny_disk / "files")] == [kept["sha256"]]  # no half file left
    assert await (await api.request("GET", f"/api/v1/files/{kept['$file']}")).read() == b"small and safe"


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


async def test_memory_stays_flat_for_200_mb_each_way(api: Api) -> None:
    size, block = 200 * 1024 * 1024, os.urandom(1024 * 1024)

    async def body() -> AsyncIterator[bytes]:
        for _ in range(size // len(block)):
            yield block

    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
    before = _rss()
    file = (await api.json("POST", "/api/v1/files?name=big.bin", 201, data=body()))["file"]
    response = await api.request("GET", f"/api/v1/files/{file['$file']}")
    received = 0
    async for chunk in response.content.iter_chunked(1024 * 1024):
        received += len(chunk)
    grown = _rss() - before
    assert received == size == file["size"]
    assert grown < 50 * 1024 * 1024, f"peak RSS grew {grown / 2**20:.1f} MB for a 200 MB upload and download"


def test_a_malformed_files_url_stops_the_start_with_a_clear_message(settings: Settings) -> None:
    import pydantic

    with pytest.raises(pydantic.ValidationError, match="not an s3://bucket/prefix URL"):
        Settings(database_url=settings.database_url, files_url="https://bucket/prefix")
    assert Settings(database_url=settings.database_url, files_url="s3://bucket/prefix").files_url == "s3://bucket/prefix"
