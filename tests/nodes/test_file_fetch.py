"""file.fetch against a real loopback server, into the real file store."""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from nodes import contract, errors
from nodes.builtin import FileFetch, make_http_session
from tests.nodes.helpers import make_ctx
from tests.openai_standin import tiny_png

PNG = tiny_png(width=8, height=8, seed=3)


async def _png(request: web.Request) -> web.Response:
    return web.Response(body=PNG, content_type="image/png")


async def _named(request: web.Request) -> web.Response:
    return web.Response(body=b"a,b\n1,2\n", headers={"Content-Type": "text/csv",
                                                     "Content-Disposition": 'attachment; filename="../report.csv"'})


async def _gzipped(request: web.Request) -> web.Response:
    return web.Response(body=gzip.compress(b"z" * 5000), headers={"Content-Encoding": "gzip",
                                                                  "Content-Type": "text/plain"})


async def _moved(request: web.Request) -> web.Response:
    raise web.HTTPFound("/pics/dot.png")


async def _status(request: web.Request) -> web.Response:
    return web.Response(status=int(request.match_info["code"]), text="nope")


@pytest.fixture
async def server(aiohttp_server) -> AsyncIterator:
    app = web.Application()
    app.router.add_get("/pics/dot.png", _png)
    app.router.add_get("/download", _named)
    app.router.add_get("/gz", _gzipped)
    app.router.add_get("/moved", _moved)
    app.router.add_get("/status/{code}", _status)
    yield await aiohttp_server(app)


async def fetch(file_store, allow_private: bool = True, http=None, **params):
    model = contract.validate_params(FileFetch, params)
    ctx = make_ctx(allow_private=allow_private, files=file_store, http=http)
    return (await FileFetch().run(model, ctx)).model_dump(mode="json")


async def test_fetch_streams_the_body_into_the_store(server, file_store) -> None:
    out = await fetch(file_store, url=str(server.make_url("/moved")))

    assert out == {"file": {"$file": out["file"]["$file"], "name": "dot.png", "content_type": "image/png",
                            "size": len(PNG), "sha256": hashlib.sha256(PNG).hexdigest()}}
    kept = b"".join([chunk async for chunk in file_store.read(await file_store.get(out["file"]["$file"]))])
    assert kept == PNG


async def test_the_name_comes_from_content_disposition_without_its_path(server, file_store) -> None:
    out = await fetch(file_store, url=str(server.make_url("/download")))
    assert (out["file"]["name"], out["file"]["content_type"]) == ("report.csv", "text/csv")


async def test_a_compressed_body_is_stored_decoded(server, file_store) -> None:
    out = await fetch(file_store, url=str(server.make_url("/gz")))
    assert out["file"]["size"] == 5000


async def test_more_than_max_bytes_fails_and_keeps_nothing(server, file_store) -> None:
    with pytest.raises(errors.NodeFailed, match="larger than"):
        await fetch(file_store, url=str(server.make_url("/pics/dot.png")), max_bytes=10)


@pytest.mark.parametrize("code, retryable", [(404, False), (503, True)])
async def test_a_failed_answer_fails_the_node(server, file_store, code, retryable) -> None:
    with pytest.raises(errors.HttpStatusError) as caught:
        await fetch(file_store, url=str(server.make_url(f"/status/{code}")))
    assert (caught.value.status, caught.value.retryable) == (code, retryable)


async def test_private_hosts_are_refused_unless_listed(server, file_store) -> None:
    url = str(server.make_url("/pics/dot.png"))
    async with make_http_session(allow_private=False) as guarded:
        with pytest.raises(errors.SsrfBlocked):
            await fetch(file_store, allow_private=False, http=guarded, url=url)
    async with make_http_session(allow_private=False, allow_hosts=[f"127.0.0.1:{server.port}"]) as listed:
        out = await fetch(file_store, allow_private=False, http=listed, url=url)
    assert out["file"]["size"] == len(PNG)


@pytest.mark.parametrize("params", [{"url": "ftp://x/y"}, {"url": "http://x/", "max_bytes": 0}, {}])
def test_bad_parameters_are_refused(params) -> None:
    with pytest.raises(errors.InvalidParams):
        contract.validate_params(FileFetch, params)
