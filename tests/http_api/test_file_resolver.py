"""FileResolver against a real file store and a real HTTP server on loopback (no mocks)."""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web

from graph_runtime.models import Task, TaskRequest
from http_api.file_resolver import FileRefNotFound, FileResolver, check_request_files
from nodes import errors
from nodes.builtin import make_http_session
from nodes.files import File
from storage.files import LocalFileStore
from tests.support import FileSize

JPEG = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 40
TASK = Task(id=1, flow_id="f", revision=1, request=TaskRequest("a", "a", "a", {}, {}))


@pytest_asyncio.fixture
async def origin(aiohttp_server: Any) -> Any:
    """A loopback server with a JPEG, a redirect to it, a 404, a gzip-only answer and a big body."""
    async def cat(_: web.Request) -> web.Response:
        return web.Response(body=JPEG, content_type="image/jpeg")

    async def moved(_: web.Request) -> web.Response:
        raise web.HTTPFound("/img/cat%20photo.jpg?sig=secret")

    async def gone(_: web.Request) -> web.Response:
        return web.Response(status=404, text="no")

    async def gzipped(request: web.Request) -> web.Response:
        body = gzip.compress(JPEG) if request.query.get("ok") else b"\x1f\x8b..."
        return web.Response(body=body, headers={"Content-Encoding": "gzip"}, content_type="image/jpeg")

    async def big(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()  # chunked: no Content-Length to refuse it early
        await response.prepare(request)
        for _ in range(80):
            await response.write(b"x" * 1024)
        return response

    app = web.Application()
    app.router.add_get("/img/cat photo.jpg", cat)
    app.router.add_get("/moved", moved)
    app.router.add_get("/gone", gone)
    app.router.add_get("/gz", gzipped)
    app.router.add_get("/big", big)
    return await aiohttp_server(app)


@pytest_asyncio.fixture
async def resolver(file_store: LocalFileStore) -> AsyncIterator[FileResolver]:
    async with make_http_session(allow_private=True) as http:
        yield FileResolver(file_store, http, allow_private=True, max_bytes=65536)


async def resolve(resolver: FileResolver, params: dict[str, Any]) -> dict[str, Any]:
    return (await resolver.resolve(TASK, "n", FileSize, params)).params


async def test_a_bare_file_id_becomes_the_complete_file_value(resolver: FileResolver, file_store: LocalFileStore) -> None:
    stored = await file_store.put_bytes(b"abc", name="a.txt", content_type="text/plain")
    params = await resolve(resolver, {"file": {"$file": stored.id}, "more": [{"$file": stored.id}]})
    assert params["file"] == stored.as_value()
    assert params["more"] == [stored.as_value()]


async def test_an_unknown_id_fails_naming_the_slot(resolver: FileResolver) -> None:
    with pytest.raises(errors.InvalidParams) as caught:
        await resolve(resolver, {"file": {"$file": "nope"}})
    assert caught.value.field == "file"
    with pytest.raises(errors.InvalidParams) as caught:
        await resolve(resolver, {"file": {"$file": "nope"}, "more": []})
    assert caught.value.field == "file"


async def test_a_url_is_fetched_into_the_store(resolver: FileResolver, file_store: LocalFileStore, origin: Any) -> None:
    url = str(origin.make_url("/moved"))  # a redirect first: its target names the file
    params = await resolve(resolver, {"file": url, "more": [str(origin.make_url("/img/cat photo.jpg"))]})
    fetched = File.model_validate(params["file"])
    assert (fetched.name, fetched.content_type, fetched.size) == ("cat photo.jpg", "image/jpeg", len(JPEG))
    assert fetched.sha256 == hashlib.sha256(JPEG).hexdigest()
    assert (await file_store.get(fetched.id)) == fetched
    assert File.model_validate(params["more"][0]).sha256 == fetched.sha256
    gzipped = File.model_validate((await resolve(resolver, {"file": str(origin.make_url("/gz?ok=1"))}))["file"])
    assert (gzipped.size, gzipped.sha256, gzipped.name) == (len(JPEG), fetched.sha256, "gz"), "stored decoded"


@pytest.mark.parametrize(("path", "error", "words"), [
    ("/gone", errors.HttpStatusError, "answered 404"),
    ("/gz", errors.NodeFailed, "is not valid gzip"),
    ("/big", errors.NodeFailed, "larger than 65536 bytes"),
])
async def test_a_url_that_cannot_be_kept_fails_clearly(resolver: FileResolver, origin: Any, path: str,
                                                        error: type[Exception], words: str) -> None:
    with pytest.raises(error, match=words.replace("(", r"\(").replace(")", r"\)")):
        await resolve(resolver, {"file": str(origin.make_url(path))})


async def test_a_private_address_is_refused_when_the_guard_is_on(file_store: LocalFileStore, origin: Any) -> None:
    async with make_http_session(allow_private=False) as http:
        guarded = FileResolver(file_store, http, allow_private=False, max_bytes=65536)
        with pytest.raises(errors.SsrfBlocked):
            await resolve(guarded, {"file": str(origin.make_url("/img/cat photo.jpg"))})
        with pytest.raises(errors.SsrfBlocked):
            await resolve(guarded, {"file": f"http://localhost:{origin.port}/img/cat%20photo.jpg"})


async def test_request_files_are_checked_with_their_paths(file_store: LocalFileStore) -> None:
    stored = await file_store.put_bytes(b"abc", name="a.txt", content_type="text/plain")
    settings = {"p": {"data": {"list": [1, {"$file": stored.id}]}}}
    assert await check_request_files(file_store, settings) == [stored]
    with pytest.raises(FileRefNotFound) as caught:
        await check_request_files(file_store, {"p": {"data": {"list": [{"$file": stored.id}, {"$file": "x"}]}}})
    assert caught.value.field == "node_settings.p.data.list.1"
    assert caught.value.code == "file_not_found"
