"""HTTP hygiene against an attacker with a key: slow or vanishing clients, encoded bodies, keys in logs.

Most tests talk raw HTTP over a socket to the app served as ``graph-runtime serve`` serves it
(``commands.server_options``), with 1-second header and body timeouts; the last one runs the real
command and reads its stderr, because what it checks is the process's log.
"""

from __future__ import annotations

import asyncio
import functools
import gzip
import json
import logging
import socket
import sys
import time
import tracemalloc
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from http_api import auth, commands
from http_api.app import create_app
from http_api.body import SERVICES
from http_api.redaction import REDACT_SECRETS, redact
from http_api.settings import Settings
from tests.conftest import SAMPLE_FLOWS, Api
from tests.processes import serving, sqlite_url, wait_until
from tests.support import eventually, registry_with_test_types

HEADER_TIMEOUT_S = 1.0
BODY_TIMEOUT_S = 1.0
SLACK_S = 1.5  # scheduling slack on a busy CI machine, on top of a timeout
TOKEN = "Z3J0a19rZXk6c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA=="


@pytest.fixture(autouse=True)
def no_secret_values_of_other_tests(monkeypatch: pytest.MonkeyPatch) -> None:
    """The log filter is process-wide: it also masks the values of secrets that other tests in
    this worker resolved (a secret whose value was "k" masked every k). These tests start from none."""
    monkeypatch.setattr(REDACT_SECRETS, "_values", ())


@dataclass
class Served:
    port: int
    token: str
    app: web.Application

    @property
    def services(self) -> Any:
        return self.app[SERVICES]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def post(self, path: str, body: bytes, **headers: str) -> tuple[int, Any]:
        async with aiohttp.ClientSession() as http, http.post(
            f"{self.url}{path}", data=body,
            headers={"Authorization": f"Basic {self.token}", "Content-Type": "application/json", **headers},
        ) as response:
            return response.status, await response.json()


@pytest_asyncio.fixture
async def served(settings: Settings) -> AsyncIterator[Served]:
    """The production app on a port with the production server options, and an admin key."""
    settings = settings.model_copy(update={"header_timeout_s": HEADER_TIMEOUT_S, "body_timeout_s": BODY_TIMEOUT_S})
    app = create_app(settings, registry=registry_with_test_types())
    runner = web.AppRunner(app, **commands.server_options(settings))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        _, token = await auth.issue_key(app[SERVICES].repo, "hygiene-admin", "admin")  # type: ignore[attr-defined]
        yield Served(runner.addresses[0][1], token, app)
    finally:
        await runner.cleanup()


def request_bytes(method: str, path: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: test", *(f"{name}: {value}" for name, value in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One HTTP answer: status, headers (lower-case names) and its Content-Length body."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    headers = {name.lower(): value for name, _, value in (line.partition(": ") for line in head[1:] if line)}
    return int(head[0].split()[1]), headers, await reader.readexactly(int(headers.get("content-length", 0)))


async def closed_by_server(reader: asyncio.StreamReader, within: float) -> float:
    """Seconds until the server closes the connection (EOF or reset); fails after ``within``."""
    started = time.monotonic()
    try:
        async with asyncio.timeout(within):
            while await reader.read(65536):
                pass
    except ConnectionResetError:
        pass
    return time.monotonic() - started


# --- bodies: encodings ------------------------------------------------------------------------


async def test_a_content_encoding_other_than_gzip_or_deflate_is_a_json_415(served: Served) -> None:
    for encoding in ("br", "zstd", "compress", "gzip, br"):
        status, body = await served.post("/api/v1/keys", b'{"name": "x"}', **{"Content-Encoding": encoding})
        assert status == 415, (encoding, body)
        assert body["error"]["code"] == "unsupported_encoding" and body["error"]["field"] == "Content-Encoding"
    assert [k.name for k in await served.services.repo.list_keys()] == ["hygiene-admin"]


async def test_gzip_and_deflate_bodies_are_read_decoded(served: Served) -> None:
    raw = json.dumps({"name": "decoded"}).encode()
    raw_deflate = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    for encoding, body in (("gzip", gzip.compress(raw)), ("x-gzip", gzip.compress(raw)),
                           ("deflate", zlib.compress(raw)), ("deflate", raw_deflate.compress(raw) + raw_deflate.flush()),
                           ("identity", raw)):
        status, key = await served.post("/api/v1/keys", body, **{"Content-Encoding": encoding})
        assert (status, key["name"]) == (201, "decoded"), (encoding, key)


async def test_a_gzip_body_that_is_cut_short_is_400_and_closes_the_connection(served: Served) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    body = gzip.compress(json.dumps({"name": "x" * 1000}).encode())[:-10]
    writer.write(request_bytes("POST", "/api/v1/keys", {"Authorization": f"Basic {served.token}",
                                                        "Content-Encoding": "gzip", "Content-Length": str(len(body))},
                               body))
    status, _, answer = await read_answer(reader)
    assert status == 400 and json.loads(answer)["error"]["code"] == "invalid_json", answer
    await closed_by_server(reader, within=SLACK_S)
    writer.close()


@functools.cache
def gzip_bomb(decoded_mib: int = 64) -> bytes:
    """``decoded_mib`` MiB of zeros, gzipped (about 1000:1)."""
    compressor, zeros = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS), bytes(2**20)
    return b"".join(compressor.compress(zeros) for _ in range(decoded_mib)) + compressor.flush()


async def _bomb_costs_no_memory(url: str, token: str) -> None:
    tracemalloc.start()
    try:
        async with aiohttp.ClientSession() as http, http.post(
            f"{url}/api/v1/keys", data=gzip_bomb(),
            headers={"Authorization": f"Basic {token}", "Content-Encoding": "gzip", "Content-Type": "application/json"},
        ) as response:
            assert response.status == 413, await response.text()
            assert (await response.json())["error"]["code"] == "body_too_large"
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20, f"decoding a 64 MiB gzip bomb peaked at {peak / 2**20:.1f} MiB"


async def test_a_gzip_bomb_is_413_and_memory_stays_flat(served: Served) -> None:
    await _bomb_costs_no_memory(served.url, served.token)


async def test_a_gzip_bomb_is_413_on_a_server_that_left_decoding_to_aiohttp(api: Api) -> None:
    await _bomb_costs_no_memory(str(api.client.make_url("")).rstrip("/"), api.token)


# --- slow and vanishing clients ---------------------------------------------------------------


async def test_a_client_that_hangs_up_mid_body_is_an_info_line_not_a_500(
        served: Served, caplog: pytest.LogCaptureFixture) -> None:
    async def hang_up() -> None:
        _, writer = await asyncio.open_connection("127.0.0.1", served.port)
        writer.write(request_bytes("POST", "/api/v1/keys", {"Authorization": f"Basic {served.token}",
                                                            "Content-Length": "1000"}, b'{"name": "'))
        await writer.drain()
        await asyncio.sleep(0.1)  # the handler is reading the body when the client goes
        writer.close()

    await asyncio.gather(*(hang_up() for _ in range(20)))
    disconnects = await eventually(lambda: [r for r in caplog.records if getattr(r, "action", "") ==
                                            "client_disconnected"] if len(caplog.records) else None)
    await eventually(lambda: sum(getattr(r, "status", None) == 499 for r in caplog.records) == 20)
    assert {r.levelno for r in disconnects} == {logging.INFO}
    assert not [r for r in caplog.records if getattr(r, "status", None) == 500 or r.exc_info]
    assert [k.name for k in await served.services.repo.list_keys()] == ["hygiene-admin"]


async def test_a_body_that_stops_coming_is_408_and_the_connection_closes(served: Served) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    writer.write(request_bytes("POST", "/api/v1/keys", {"Authorization": f"Basic {served.token}",
                                                        "Content-Length": "1000"}, b'{"name": "'))
    started = time.monotonic()
    status, _, body = await asyncio.wait_for(read_answer(reader), BODY_TIMEOUT_S + SLACK_S)
    assert time.monotonic() - started >= BODY_TIMEOUT_S * 0.9
    assert status == 408 and json.loads(body)["error"]["code"] == "body_timeout", body
    await closed_by_server(reader, within=SLACK_S)
    writer.close()


async def _trickle(port: int, first: bytes, then: bytes) -> float:
    """Send ``first``, then ``then`` every 0.1 s; seconds until the server closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    writer.write(first)

    async def keep_sending() -> None:
        while True:
            await asyncio.sleep(0.1)
            writer.write(then)
            await writer.drain()

    sender = asyncio.create_task(keep_sending())
    try:
        await closed_by_server(reader, within=max(HEADER_TIMEOUT_S, BODY_TIMEOUT_S) + SLACK_S)
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)  # it may have hit the closed socket
        writer.close()
    return time.monotonic() - started


async def test_slow_headers_slow_bodies_and_silent_connections_are_closed(
        served: Served, caplog: pytest.LogCaptureFixture) -> None:
    auth_header = {"Authorization": f"Basic {served.token}", "Content-Length": "100000"}
    slow_headers, slow_body, silent = await asyncio.gather(
        _trickle(served.port, b"GET /api/v1/flows HTTP/1.1\r\nHost: test\r\n", b"X-Slow: 1\r\n"),
        _trickle(served.port, request_bytes("POST", "/api/v1/keys", auth_header, b"{"), b" "),
        _trickle(served.port, b"", b""),
    )
    for name, took, limit in (("headers", slow_headers, HEADER_TIMEOUT_S), ("body", slow_body, BODY_TIMEOUT_S),
                              ("silent", silent, HEADER_TIMEOUT_S)):
        assert limit * 0.9 <= took <= limit + SLACK_S, (name, took)
    assert any(getattr(r, "status", None) == 408 for r in caplog.records)  # the slow body was answered first


async def test_a_keep_alive_connection_still_serves_one_request_after_another(served: Served) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    for _ in range(3):
        writer.write(request_bytes("GET", "/api/v1/flows", {"Authorization": f"Basic {served.token}"}))
        status, headers, _ = await read_answer(reader)
        assert status == 200 and headers.get("connection", "keep-alive").lower() != "close"
        await asyncio.sleep(HEADER_TIMEOUT_S / 2)  # idle, but less than the timeout each time
    writer.close()


# --- keys in logs -----------------------------------------------------------------------------


@pytest.mark.parametrize("text", [
    f"GET /api/v1/flows?execution-key={TOKEN}&x=1 HTTP/1.1",
    f"GET /api/v1/flows?x=1&Execution-KEY={TOKEN}",
    f"GET /api/v1/flows?execution%2Dkey={TOKEN}",
    f"GET /api/v1/flows?%65xecution%2dkey%3D{TOKEN}",
    f"b'GET /api/v1/flows?execution-key={TOKEN}\\x01 HTTP/1.1'",
    f"b'Authorization: Basic {TOKEN}\\x00'",
    f"authorization: bearer {TOKEN}",
    f"Authorization: {TOKEN}",
    f"execution-key: {TOKEN}",
    f"<CIMultiDictProxy('Host': 'x', 'Authorization': 'Basic {TOKEN}', 'Execution-Key': '{TOKEN}')>",
    f"[('Authorization', 'Bearer {TOKEN}')]",
    f"Got more than 8190 bytes when reading: b'Bearer {TOKEN}AAAA...'",
    f'{{"execution-key": "{TOKEN}"}}',
])
def test_redact_masks_a_key_however_it_is_spelled(text: str) -> None:
    redacted = redact(text)
    assert TOKEN[:12] not in redacted and "***" in redacted, redacted


def test_redact_leaves_text_without_keys_alone() -> None:
    for text in ("send Authorization: Basic <key>, or ?execution-key=<token>", "GET /api/v1/flows?limit=5 200",
                 "basic settings for the bearer of this flow"):
        assert redact(text) == text


def test_the_filter_masks_message_arguments_traceback_and_extra() -> None:
    try:
        raise ValueError(f"bad header Authorization: Basic {TOKEN}")
    except ValueError:
        record = logging.getLogger("test").makeRecord(
            "test", logging.WARNING, __file__, 1, "refused %s", (f"/x?execution-key={TOKEN}",), None,
            extra={"path": f"/x?execution-key={TOKEN}"})
        record.exc_info = sys.exc_info()
    assert REDACT_SECRETS.filter(record)
    line = logging.Formatter("%(message)s %(path)s").format(record)
    assert TOKEN[:12] not in line, line
    assert line.startswith("refused /x?execution-key=*** /x?execution-key=***\n"), line
    assert line.endswith("ValueError: bad header Authorization: Basic ***"), line


async def test_aiohttp_logs_no_key_even_where_logging_is_not_ours(
        served: Served, caplog: pytest.LogCaptureFixture) -> None:
    """pytest's log capture is not the CLI's handler: the filter on aiohttp's loggers covers it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    writer.write(f"GET /api/v1/flows?execution-key={served.token}\x01 HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    status, _, _ = await read_answer(reader)
    writer.close()
    assert status == 400
    logged = await eventually(lambda: [r for r in caplog.records if r.name == "aiohttp.server"])
    text = "\n".join(logging.Formatter().format(r) for r in caplog.records)
    assert "execution-key=***" in logged[0].getMessage() and served.token[:12] not in text, text


def _raw_exchange(port: int, data: bytes, *, hang_up: bool = False) -> bytes:
    """Send ``data`` on a new connection; what the server answers before it closes (nothing if we hang up)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        if hang_up:
            time.sleep(0.1)
            return b""
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def test_a_served_process_writes_no_key_to_its_log_whatever_is_sent(tmp_path: Path) -> None:
    with serving("--db", sqlite_url(tmp_path / "x.db"), "--flows", str(SAMPLE_FLOWS), cwd=tmp_path) as server:
        token = server.keys_printed[0]
        malformed = [
            f"GET /api/v1/flows?execution-key={token}&pad={'a' * 9000} HTTP/1.1\r\nHost: t\r\n\r\n",
            f"GET /api/v1/flows?pad={'a' * 8100}&execution-key={token} HTTP/1.1\r\nHost: t\r\n\r\n",
            f"GET /api/v1/flows?execution-key={token}\x01 HTTP/1.1\r\nHost: t\r\n\r\n",
            f"GET /api/v1/flows?Execution%2DKey={token}\x7f HTTP/1.1\r\nHost: t\r\n\r\n",
            f"GET /api/v1/flows HTTP/1.1\r\nHost: t\r\nAuthorization: Basic {token}\x00\r\n\r\n",
            f"GET /api/v1/flows HTTP/1.1\r\nHost: t\r\nexecution-key: {token}\x01\r\n\r\n",
            f"GET /api/v1/flows HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}{'A' * 9000}\r\n\r\n",
        ]
        for request in malformed:
            answer = _raw_exchange(server.port, request.encode("latin-1"))
            assert answer.startswith(b"HTTP/1.") and answer.split()[1] == b"400", answer[:200]
        ok = _raw_exchange(server.port, f"GET /api/v1/flows?execution-key={token} HTTP/1.1\r\nHost: t\r\n"
                                        "Connection: close\r\n\r\n".encode())
        assert ok.split()[1] == b"200", ok[:200]
        _raw_exchange(server.port, request_bytes("POST", f"/api/v1/keys?execution-key={token}",
                                                 {"Content-Length": "1000"}, b'{"name": "'), hang_up=True)
        wait_until(lambda: server.stderr.count("malformed request refused") == len(malformed)
                   and "client_disconnected" in server.stderr and '" 499 ' in server.stderr,
                   timeout=10, what="every request logged")
        log = server.stderr
    assert "execution-key=***" in log and "Basic ***" in log, log
    leaks = [token[i:i + 12] for i in range(len(token) - 11) if token[i:i + 12] in log]
    assert not leaks, log
    assert "Traceback" not in log and " ERROR " not in log and '" 500 ' not in log, log
