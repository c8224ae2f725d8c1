"""http_request against a real local aiohttp server (the only network these tests touch)."""

from __future__ import annotations

import asyncio
import functools
import gzip
import hashlib
import ipaddress
import socket
import struct
import zlib
from collections.abc import AsyncIterator, Callable, Iterator

import aiohttp
import pytest
from aiohttp import web

from nodes import contract, errors
from nodes.builtin import HttpRequest, make_http_session, ssrf
from nodes.builtin.http_request import HttpRequestParams
from nodes.limits import MIB, Limits
from tests.nodes.helpers import make_ctx
from tests.nodes.test_ssrf import StubResolver

HITS = web.AppKey("hits", list)
RELEASE = web.AppKey("release", asyncio.Event)


@web.middleware
async def _count(request: web.Request, handler):
    request.app[HITS].append(request.path)
    return await handler(request)


async def _json(request: web.Request) -> web.Response:
    return web.json_response({"hello": "world"}, headers={"X-Trace": "abc"})


async def _echo(request: web.Request) -> web.Response:
    return web.json_response(
        {
            "method": request.method,
            "content_type": request.headers.get("Content-Type"),
            "authorization": request.headers.get("Authorization"),
            "cookie": request.headers.get("Cookie"),
            "accept_encoding": request.headers.get("Accept-Encoding"),
            "body": await request.text(),
        }
    )


async def _text(request: web.Request) -> web.Response:
    return web.Response(text="plain words, not JSON")


async def _status(request: web.Request) -> web.Response:
    return web.Response(status=int(request.match_info["code"]), text="nope")


async def _hops(request: web.Request) -> web.Response:
    left = int(request.match_info["n"])
    if left == 0:
        return web.json_response({"arrived": True})
    # A relative Location, as many servers send.
    raise web.HTTPFound(f"../hops/{left - 1}")


async def _to(request: web.Request) -> web.Response:
    status = int(request.query.get("status", "302"))
    return web.Response(status=status, headers={"Location": request.query["url"]})


async def _slow(request: web.Request) -> web.Response:
    await request.app[RELEASE].wait()
    return web.Response(text="late")


async def _big(request: web.Request) -> web.Response:
    return web.Response(body=b"x" * 2000, content_type="text/plain")


async def _big_streamed(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/plain"})
    await response.prepare(request)  # no Content-Length: chunked
    for _ in range(20):
        await response.write(b"y" * 100)
    await response.write_eof()
    return response


def _zeros(wbits: int, mib: int) -> Iterator[bytes]:
    """A gzip (``wbits`` 31) or zlib (15) stream of ``mib`` MiB of zeros, about 1 KiB per MiB.

    Made without compressing it all: after a full flush, each MiB of zeros compresses to the
    same bytes, so one such block is repeated, then the stream is ended with its own checksum.
    """
    zeros = bytes(MIB)
    comp = zlib.compressobj(9, zlib.DEFLATED, wbits)
    first = comp.compress(zeros) + comp.flush(zlib.Z_FULL_FLUSH)
    block = comp.compress(zeros) + comp.flush(zlib.Z_FULL_FLUSH)
    yield first[: len(first) - len(block)]  # the header
    for _ in range(mib):
        yield block
    end = comp.flush(zlib.Z_FINISH)
    size = mib * MIB
    if wbits == 31:
        crc = functools.reduce(lambda crc, _: zlib.crc32(zeros, crc), range(mib), 0)
        yield end[:-8] + struct.pack("<II", crc, size & 0xFFFFFFFF)
    else:
        yield end[:-4] + struct.pack(">I", (size % 65521) << 16 | 1)  # Adler-32 of zeros


@functools.cache
def _gzip_bomb() -> bytes:
    return b"".join(_zeros(31, 200))  # ~200 KB that inflate to 200 MiB


def _raw_deflate(data: bytes) -> bytes:
    comp = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return comp.compress(data) + comp.flush()


PAYLOAD = b'{"hello": "encoded", "padding": "' + b"p" * 100 + b'"}'
# name in the URL: (Content-Encoding sent, how the payload is encoded)
ENCODED: dict[str, tuple[str, Callable[[bytes], bytes]]] = {
    "gzip": ("gzip", gzip.compress),
    "x-gzip": ("x-gzip", gzip.compress),
    "deflate": ("deflate", zlib.compress),
    "deflate-raw": ("deflate", _raw_deflate),
    "gzip-members": ("gzip", lambda data: gzip.compress(data[:9]) + gzip.compress(data[9:])),
    "identity": ("identity", lambda data: data),
    "br": ("br", lambda data: b"\x1b\x00\x00brotli-ish"),
    "corrupt-gzip": ("gzip", lambda data: b"\x1f\x8b not really gzip"),
    "many-members": ("gzip", lambda data: gzip.compress(b"") * 1025),
    "big-gzip": ("gzip", lambda data: gzip.compress(b"z" * 2000)),
    "bomb": ("gzip", lambda data: _gzip_bomb()),
}


async def _encoded(request: web.Request) -> web.Response:
    encoding, encode = ENCODED[request.match_info["name"]]
    return web.Response(
        body=encode(PAYLOAD),
        headers={"Content-Encoding": encoding, "Content-Type": "application/json"},
    )


async def _endless_deflate(request: web.Request) -> web.StreamResponse:
    """2 GiB of zeros as a deflate stream of ~2 MB, written as fast as the client takes it."""
    response = web.StreamResponse(headers={"Content-Encoding": "deflate", "Content-Type": "text/plain"})
    await response.prepare(request)
    try:
        for part in _zeros(15, 2048):
            await response.write(part)
    except (ConnectionResetError, RuntimeError):
        pass  # the client went away, as it should
    return response


async def _empty_blocks(request: web.Request) -> web.StreamResponse:
    """A deflate stream of empty blocks: it never ends and never inflates to a byte."""
    response = web.StreamResponse(headers={"Content-Encoding": "deflate", "Content-Type": "text/plain"})
    await response.prepare(request)  # no Content-Length: chunked
    try:
        await response.write(b"\x78\x01")  # zlib header
        for _ in range(1000):
            await response.write(b"\x00\x00\x00\xff\xff" * 100)  # empty stored blocks
    except (ConnectionResetError, RuntimeError):
        pass  # the client went away, as it should
    return response


async def _trickle(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/plain"})
    await response.prepare(request)
    await response.write(b"x")
    await request.app[RELEASE].wait()
    return response


async def _set_cookie(request: web.Request) -> web.Response:
    response = web.json_response({})
    response.set_cookie("session", "secret")
    return response


def _app() -> web.Application:
    app = web.Application(middlewares=[_count])
    app[HITS] = []
    app[RELEASE] = asyncio.Event()
    app.router.add_get("/json", _json)
    app.router.add_route("*", "/echo", _echo)
    app.router.add_get("/text", _text)
    app.router.add_get("/status/{code}", _status)
    app.router.add_get("/hops/{n}", _hops)
    app.router.add_route("*", "/to", _to)
    app.router.add_get("/slow", _slow)
    app.router.add_get("/big", _big)
    app.router.add_get("/big-streamed", _big_streamed)
    app.router.add_get("/set-cookie", _set_cookie)
    app.router.add_get("/encoded/{name}", _encoded)
    app.router.add_get("/endless-deflate", _endless_deflate)
    app.router.add_get("/trickle", _trickle)
    app.router.add_get("/empty-blocks", _empty_blocks)
    return app


@pytest.fixture
async def server(aiohttp_server) -> AsyncIterator:
    server = await aiohttp_server(_app())
    yield server
    # Let a handler still waiting (a test that timed out) finish, so shutdown is quick.
    server.app[RELEASE].set()


def _url(server, path: str) -> str:
    return str(server.make_url(path))


async def _request(
    allow_private: bool = True, http=None, timeout_s=None, limits: Limits | None = None, **params
):
    # No limits given to validate_params here: the node's own check must hold without them.
    node_params = contract.validate_params(HttpRequest, params)
    assert isinstance(node_params, HttpRequestParams)
    ctx = make_ctx(
        allow_private=allow_private, http=http, timeout_s=timeout_s, limits=limits or Limits()
    )
    return await HttpRequest().run(node_params, ctx)


@pytest.fixture
def loopback_is_public(monkeypatch) -> None:
    """Treat 127.0.0.1 as public, so the local server can stand for a public one."""
    real = ssrf.is_blocked_address
    loopback = ipaddress.ip_address("127.0.0.1")
    monkeypatch.setattr(ssrf, "is_blocked_address", lambda a: a != loopback and real(a))


async def test_get_json(server) -> None:
    output = await _request(url=_url(server, "/json"))

    assert output.status == 200
    assert output.json == {"hello": "world"}
    assert output.text == '{"hello": "world"}'
    assert output.headers["x-trace"] == "abc"
    assert output.headers["content-type"].startswith("application/json")


async def test_post_json_is_sent_as_json(server) -> None:
    output = await _request(method="post", url=_url(server, "/echo"), json={"a": [1, 2]})

    assert output.json["method"] == "POST"
    assert output.json["content_type"] == "application/json"
    assert output.json["body"] == '{"a":[1,2]}'


async def test_text_body_and_headers_are_sent(server) -> None:
    output = await _request(
        method="PUT",
        url=_url(server, "/echo"),
        body="héllo",
        headers={"Content-Type": "text/x-custom"},
    )

    assert output.json["body"] == "héllo"
    assert output.json["content_type"] == "text/x-custom"


def test_json_and_body_together_are_refused() -> None:
    with pytest.raises(errors.InvalidParams, match="either json or body"):
        contract.validate_params(HttpRequest, {"url": "http://x.test/", "json": {}, "body": "b"})


@pytest.mark.parametrize(
    "url", ["ftp://example.com/f", "file:///etc/passwd", "/relative", "http://", "not a url"]
)
def test_only_absolute_http_urls_are_accepted(url) -> None:
    with pytest.raises(errors.InvalidParams) as caught:
        contract.validate_params(HttpRequest, {"url": url})

    assert caught.value.field == "url"


def test_header_injection_is_refused() -> None:
    with pytest.raises(errors.InvalidParams) as caught:
        contract.validate_params(
            HttpRequest, {"url": "http://x.test/", "headers": {"X": "a\r\nHost: evil"}}
        )

    assert caught.value.field == "headers"


async def test_non_json_body_gives_null_json(server) -> None:
    output = await _request(url=_url(server, "/text"))

    assert output.json is None
    assert output.text == "plain words, not JSON"


async def test_head_has_empty_text(server) -> None:
    output = await _request(method="HEAD", url=_url(server, "/json"))

    assert (output.status, output.text, output.json) == (200, "", None)


@pytest.mark.parametrize(("code", "retryable"), [(503, True), (429, True), (404, False)])
async def test_unexpected_status_fails(server, code, retryable) -> None:
    with pytest.raises(errors.HttpStatusError, match=f"answered {code}") as caught:
        await _request(url=_url(server, f"/status/{code}"))

    assert caught.value.status == code
    assert caught.value.retryable is retryable


async def test_expect_status_accepts_listed_statuses_only(server) -> None:
    output = await _request(url=_url(server, "/status/404"), expect_status=[404])
    assert output.status == 404

    with pytest.raises(errors.HttpStatusError):
        await _request(url=_url(server, "/json"), expect_status=[201])


async def test_redirect_chain_is_followed(server) -> None:
    output = await _request(url=_url(server, "/hops/3"))

    assert output.json == {"arrived": True}
    assert server.app[HITS] == ["/hops/3", "/hops/2", "/hops/1", "/hops/0"]


async def test_too_many_redirects_fail(server) -> None:
    with pytest.raises(errors.NodeFailed, match="more than 10 redirects"):
        await _request(url=_url(server, "/hops/11"))


@pytest.mark.parametrize(
    ("status", "method"), [(303, "GET"), (302, "GET"), (307, "POST"), (308, "POST")]
)
async def test_redirect_method_follows_the_status(server, status, method) -> None:
    target = _url(server, "/echo")
    output = await _request(
        method="POST", url=_url(server, f"/to?status={status}&url={target}"), json={"k": 1}
    )

    assert output.json["method"] == method
    assert output.json["body"] == ("" if method == "GET" else '{"k":1}')


async def test_credentials_do_not_follow_a_redirect_to_another_origin(
    server, aiohttp_server
) -> None:
    other = await aiohttp_server(_app())
    headers = {"Authorization": "Bearer t", "Cookie": "c=1"}

    same = await _request(url=_url(server, f"/to?url={_url(server, '/echo')}"), headers=headers)
    cross = await _request(url=_url(server, f"/to?url={_url(other, '/echo')}"), headers=headers)

    assert (same.json["authorization"], same.json["cookie"]) == ("Bearer t", "c=1")
    assert (cross.json["authorization"], cross.json["cookie"]) == (None, None)


async def test_redirect_to_another_scheme_fails(server) -> None:
    with pytest.raises(errors.NodeFailed, match="not http"):
        await _request(url=_url(server, "/to?url=file:///etc/passwd"))


async def test_loopback_is_refused_by_default_without_connecting(server) -> None:
    with pytest.raises(errors.SsrfBlocked):
        await _request(allow_private=False, url=_url(server, "/json"))

    assert server.app[HITS] == []


async def test_localhost_name_is_refused_by_the_resolver(server) -> None:
    with pytest.raises(errors.SsrfBlocked, match="resolves to"):
        await _request(allow_private=False, url=f"http://localhost:{server.port}/json")

    assert server.app[HITS] == []


async def test_shared_session_refuses_localhost_too(server) -> None:
    async with make_http_session(allow_private=False) as session:
        with pytest.raises(errors.SsrfBlocked):
            await _request(
                allow_private=False, http=session, url=f"http://localhost:{server.port}/json"
            )

    assert server.app[HITS] == []


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/",
        "http://[::1]:8080/",
        "http://127.1/",
    ],
)
async def test_private_literals_are_refused_without_network_io(url) -> None:
    started: list[str] = []

    async def on_start(session, context, params) -> None:
        started.append(str(params.url))

    tracing = aiohttp.TraceConfig()
    tracing.on_request_start.append(on_start)
    # A plain session with no SSRF resolver: the node's own check must stop the request.
    async with aiohttp.ClientSession(trace_configs=[tracing]) as session:
        with pytest.raises(errors.SsrfBlocked):
            await _request(allow_private=False, http=session, url=url)

    assert started == []


@pytest.mark.parametrize(
    "target",
    ["http://169.254.169.254/latest/meta-data/", "http://10.0.0.1/", "http://[::ffff:10.0.0.1]/"],
)
async def test_redirect_to_a_private_address_is_refused(server, loopback_is_public, target) -> None:
    with pytest.raises(errors.SsrfBlocked):
        await _request(allow_private=False, url=_url(server, f"/to?url={target}"))

    assert server.app[HITS] == ["/to"]


async def test_redirect_to_a_name_resolving_privately_is_refused(
    server, loopback_is_public
) -> None:
    stub = StubResolver({"public.test": ["127.0.0.1"], "internal.test": ["10.1.2.3"]})
    connector = aiohttp.TCPConnector(resolver=ssrf.SsrfSafeResolver(stub))
    async with aiohttp.ClientSession(connector=connector) as session:
        first = f"http://public.test:{server.port}/to?url=http://internal.test/admin"
        with pytest.raises(errors.SsrfBlocked, match=r"internal\.test"):
            await _request(allow_private=False, http=session, url=first)

    assert server.app[HITS] == ["/to"]


async def test_dns_failure_is_a_connection_failure() -> None:
    connector = aiohttp.TCPConnector(resolver=ssrf.SsrfSafeResolver(StubResolver({})))
    async with aiohttp.ClientSession(connector=connector) as session:
        with pytest.raises(errors.ConnectionFailed) as caught:
            await _request(allow_private=False, http=session, url="http://nowhere.test/")

    assert caught.value.retryable


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_connection_refused_is_a_connection_failure() -> None:
    with pytest.raises(errors.ConnectionFailed) as caught:
        await _request(url=f"http://127.0.0.1:{_closed_port()}/")

    assert caught.value.code == "connection_error"
    assert caught.value.retryable


async def test_slow_server_times_out(server) -> None:
    with pytest.raises(errors.NodeTimeout) as caught:
        await _request(url=_url(server, "/slow"), timeout_s=0.2)

    assert caught.value.retryable


@pytest.mark.parametrize("path", ["/big", "/big-streamed", "/encoded/big-gzip"])
async def test_oversized_response_fails(server, path) -> None:
    with pytest.raises(errors.NodeFailed, match="larger than 1000 bytes") as caught:
        await _request(url=_url(server, path), max_response_bytes=1000)

    assert not caught.value.retryable


@pytest.mark.parametrize("path", ["/big", "/encoded/big-gzip"])
async def test_response_at_the_limit_is_accepted(server, path) -> None:
    assert len((await _request(url=_url(server, path), max_response_bytes=2000)).text) == 2000


def test_max_response_bytes_above_the_ceiling_is_refused_when_validated_with_limits() -> None:
    settings = {"url": "http://x.test/", "max_response_bytes": 2e9}
    with pytest.raises(errors.InvalidParams, match="ceiling of 10485760 bytes") as caught:
        contract.validate_params(HttpRequest, settings, limits=Limits())

    assert caught.value.field == "max_response_bytes"
    assert not caught.value.retryable
    at_ceiling = contract.validate_params(
        HttpRequest, {**settings, "max_response_bytes": 10 * MIB}, limits=Limits()
    )
    assert isinstance(at_ceiling, HttpRequestParams)
    assert at_ceiling.max_response_bytes == 10 * MIB


async def test_max_response_bytes_above_the_ceiling_fails_the_run_without_a_request(
    server,
) -> None:
    with pytest.raises(errors.InvalidParams, match="ceiling of 10485760 bytes") as caught:
        await _request(url=_url(server, "/json"), max_response_bytes=2e9)

    assert (caught.value.field, caught.value.code) == ("max_response_bytes", "invalid_params")
    assert not caught.value.retryable
    assert server.app[HITS] == []


async def test_the_ceiling_is_the_default_limit_and_may_be_raised_by_the_server(server) -> None:
    with pytest.raises(errors.NodeFailed, match="larger than 1500 bytes"):
        await _request(url=_url(server, "/big"), limits=Limits(max_response_bytes=1500))

    raised = Limits(max_response_bytes=20 * MIB)
    output = await _request(url=_url(server, "/big"), limits=raised, max_response_bytes=15 * MIB)
    assert len(output.text) == 2000


@pytest.mark.parametrize("name", ["gzip", "x-gzip", "deflate", "deflate-raw", "gzip-members", "identity"])
async def test_encoded_bodies_are_decoded(server, name) -> None:
    output = await _request(url=_url(server, f"/encoded/{name}"))

    assert output.text == PAYLOAD.decode()
    assert output.json["hello"] == "encoded"
    assert output.headers["content-encoding"] == ENCODED[name][0]


async def test_accept_encoding_offers_what_the_node_decodes(server) -> None:
    offered = await _request(url=_url(server, "/echo"))
    chosen = await _request(url=_url(server, "/echo"), headers={"Accept-Encoding": "identity"})

    assert offered.json["accept_encoding"] == "gzip, deflate"
    assert chosen.json["accept_encoding"] == "identity"


async def test_unsupported_encoding_fails_clearly(server) -> None:
    with pytest.raises(errors.NodeFailed, match="Content-Encoding 'br'") as caught:
        await _request(url=_url(server, "/encoded/br"))

    assert (caught.value.code, caught.value.retryable) == ("node_failed", False)
    # A HEAD answer has no body to decode: its Content-Encoding is no reason to fail.
    assert (await _request(method="HEAD", url=_url(server, "/encoded/br"))).text == ""


@pytest.mark.parametrize("name", ["corrupt-gzip", "many-members"])
async def test_corrupt_gzip_fails_clearly(server, name) -> None:
    with pytest.raises(errors.NodeFailed, match="is not valid gzip") as caught:
        await _request(url=_url(server, f"/encoded/{name}"))

    assert (caught.value.code, caught.value.retryable) == ("node_failed", False)


def test_zeros_helper_makes_valid_streams() -> None:
    assert gzip.decompress(b"".join(_zeros(31, 3))) == bytes(3 * MIB)
    assert zlib.decompress(b"".join(_zeros(15, 3))) == bytes(3 * MIB)


def _status_kib(key: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(f"{key}:"):
                return int(line.split()[1])
    raise AssertionError(f"no {key} in /proc/self/status")


def _reset_peak_rss() -> int:
    """Reset this process's peak RSS (VmHWM) and return its RSS now, in KiB."""
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")  # Linux: reset the peak RSS to the current RSS
    return _status_kib("VmRSS")


@pytest.mark.parametrize(
    ("path", "max_bytes"),
    [("/encoded/bomb", 10 * MIB), ("/endless-deflate", 10 * MIB), ("/endless-deflate", MIB)],
)
async def test_decompression_bomb_stops_at_the_limit_with_flat_memory(
    server, path, max_bytes
) -> None:
    _gzip_bomb()  # made before measuring: it is the server's memory, not the node's
    rss_before = _reset_peak_rss()
    with pytest.raises(errors.NodeFailed, match=f"larger than {max_bytes} bytes") as caught:
        await _request(url=_url(server, path), max_response_bytes=max_bytes)
    growth_mib = (_status_kib("VmHWM") - rss_before) / 1024

    assert (caught.value.code, caught.value.retryable) == ("node_failed", False)
    # The body may hold max_bytes; inflating a whole 64 KiB chunk of this bomb at once would
    # add ~64 MiB, reading to a 2e9 limit as before ~2 GiB.
    assert growth_mib < max_bytes / MIB + 30, f"peak RSS grew by {growth_mib:.0f} MiB"


async def test_compressed_data_that_inflates_to_nothing_is_bounded_too(server) -> None:
    with pytest.raises(errors.NodeFailed, match="larger than 1000 bytes"):
        await _request(url=_url(server, "/empty-blocks"), max_response_bytes=1000)


async def test_a_body_that_trickles_forever_times_out(server) -> None:
    with pytest.raises(errors.NodeTimeout):
        await _request(url=_url(server, "/trickle"), timeout_s=0.3)


async def test_shared_session_keeps_no_cookies(server) -> None:
    async with make_http_session(allow_private=True) as session:
        await _request(http=session, url=_url(server, "/set-cookie"))
        output = await _request(http=session, url=_url(server, "/echo"))

    assert output.json["cookie"] is None


# --- response modes, multipart files, HTTP_ALLOW_HOSTS (issue 9) ---------------------------

PNG_BYTES = b"\x89PNG\r\n\x1a\n" + b"\x00" * 100


async def _binary(request: web.Request) -> web.Response:
    return web.Response(body=PNG_BYTES, content_type="image/png")


async def _multipart_echo(request: web.Request) -> web.Response:
    parts = {}
    async for part in await request.multipart():
        data = await part.read()
        parts[part.name] = ({"filename": part.filename, "type": part.headers.get("Content-Type"),
                             "sha256": hashlib.sha256(data).hexdigest()} if part.filename else data.decode())
    return web.json_response({"content_type": request.content_type, "parts": parts})


@pytest.fixture
async def files_server(aiohttp_server) -> AsyncIterator:
    app = web.Application()
    app.router.add_get("/binary.png", _binary)
    app.router.add_get("/json", _json)
    app.router.add_get("/text", _text)
    app.router.add_post("/upload", _multipart_echo)
    yield await aiohttp_server(app)


async def _run_with_files(file_store, **params):
    node_params = contract.validate_params(HttpRequest, params)
    return (await HttpRequest().run(node_params, make_ctx(allow_private=True, files=file_store))).model_dump(mode="json")


async def test_auto_stores_a_binary_body_as_a_file(files_server, file_store) -> None:
    out = await _run_with_files(file_store, url=str(files_server.make_url("/binary.png")))

    assert (out["status"], out["json"], out["text"]) == (200, None, "")
    assert out["file"] == {"$file": out["file"]["$file"], "name": "binary.png", "content_type": "image/png",
                           "size": len(PNG_BYTES), "sha256": hashlib.sha256(PNG_BYTES).hexdigest()}


async def test_auto_keeps_text_and_json_in_the_output(files_server, file_store) -> None:
    out = await _run_with_files(file_store, url=str(files_server.make_url("/json")))
    assert (out["json"], out["file"]) == ({"hello": "world"}, None)


@pytest.mark.parametrize("path, mode, expected", [
    ("/json", "file", "file"),
    ("/binary.png", "text", "text"),
    ("/json", "text", "text"),
])
async def test_the_response_mode_decides(files_server, file_store, path, mode, expected) -> None:
    out = await _run_with_files(file_store, url=str(files_server.make_url(path)), response=mode)
    assert (out["file"] is not None) == (expected == "file")
    if mode == "text":
        assert out["json"] is None and out["text"]


async def test_json_mode_fails_on_a_body_that_is_not_json(files_server, file_store) -> None:
    with pytest.raises(errors.NodeFailed, match="not JSON"):
        await _run_with_files(file_store, url=str(files_server.make_url("/text")), response="json")


async def test_files_are_sent_as_multipart_with_json_keys_as_fields(files_server, file_store) -> None:
    photo = await file_store.put_bytes(PNG_BYTES, name="cat.png", content_type="image/png")

    out = await _run_with_files(file_store, method="POST", url=str(files_server.make_url("/upload")),
                                files={"photo": {"$file": photo.id}}, json={"caption": "a cat", "n": 2})

    assert out["json"] == {"content_type": "multipart/form-data", "parts": {
        "caption": "a cat", "n": "2",
        "photo": {"filename": "cat.png", "type": "image/png", "sha256": hashlib.sha256(PNG_BYTES).hexdigest()}}}


async def test_an_unknown_file_fails_naming_its_part(files_server, file_store) -> None:
    with pytest.raises(errors.InvalidParams) as caught:
        await _run_with_files(file_store, method="POST", url=str(files_server.make_url("/upload")),
                              files={"photo": {"$file": "missing"}})
    assert caught.value.field == "files.photo"


def test_files_with_a_text_body_are_refused() -> None:
    with pytest.raises(errors.InvalidParams, match="only a json object"):
        contract.validate_params(HttpRequest, {"url": "http://x/", "body": "b", "files": {"f": {"$file": "i"}}})


async def test_allow_hosts_lets_a_listed_private_literal_through_and_only_it(server) -> None:
    url = _url(server, "/json")
    async with make_http_session(allow_private=False, allow_hosts=[f"127.0.0.1:{server.port}"]) as listed:
        assert (await _request(allow_private=False, http=listed, url=url)).json == {"hello": "world"}
        with pytest.raises(errors.SsrfBlocked):
            await _request(allow_private=False, http=listed, url=url.replace("127.0.0.1", "127.0.0.2"))


@pytest.mark.parametrize("entries, host, port, allowed", [
    (["ollama.lan:11434"], "ollama.lan", 11434, True),
    (["ollama.lan:11434"], "ollama.lan", 80, False),
    (["Ollama.LAN."], "ollama.lan", 8080, True),
    (["10.0.0.7"], "10.0.0.7", 1, True),
    (["[::1]:8080"], "::1", 8080, True),
    (["::1"], "0:0:0:0:0:0:0:1", 9, True),
    (["10.0.0.7"], "10.0.0.8", 1, False),
])
def test_allowed_hosts_match_host_and_port(entries, host, port, allowed) -> None:
    assert ssrf.AllowedHosts.parse(entries).allows(host, port) is allowed


@pytest.mark.parametrize("entry", ["", "host:port", "host:0", "[::1]:99999"])
def test_unreadable_allow_hosts_entries_are_refused(entry) -> None:
    with pytest.raises(ValueError):
        ssrf.AllowedHosts.parse([entry])
