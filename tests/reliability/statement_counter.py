"""A TCP relay in front of PostgreSQL that counts the statements its clients send.

A process under test connects to the relay instead of the server; every frontend message passes
through unchanged, and each ``Q`` (simple query) and ``E`` (execute a bound statement) is noted
with its time and its first bytes. That is exactly "a query" as the server sees one, with none
of the server's own bookkeeping (connection start-up, statistics) in the count. It needs a server
without TLS (the machine's answers ``N`` to the SSL request, and the relay passes that through).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

_NEGOTIATIONS = {80877103, 80877104}  # SSLRequest, GSSENCRequest: answered by one byte, then the startup


@dataclass
class StatementCounter:
    upstream_host: str
    upstream_port: int
    sent: list[tuple[float, str]] = field(default_factory=list)  # (monotonic time, the statement's start)
    port: int = 0
    _server: asyncio.Server | None = None
    _relays: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for relay in list(self._relays):
            relay.cancel()
        await asyncio.gather(*self._relays, return_exceptions=True)

    def between(self, start: float, end: float) -> list[str]:
        return [text for at, text in self.sent if start <= at < end]

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        relay = asyncio.current_task()
        assert relay is not None
        self._relays.add(relay)
        try:
            server_r, server_w = await asyncio.open_connection(self.upstream_host, self.upstream_port)
            try:
                await asyncio.gather(self._frontend(client_r, server_w), self._copy(server_r, client_w))
            finally:
                server_w.close()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # either side went away (a killed worker, the end of the test)
        finally:
            client_w.close()
            self._relays.discard(relay)

    async def _frontend(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:  # untyped start-up messages: length, then a code
            head = await reader.readexactly(4)
            body = await reader.readexactly(int.from_bytes(head, "big") - 4)
            writer.write(head + body)
            await writer.drain()
            if int.from_bytes(body[:4], "big") not in _NEGOTIATIONS:
                break
        parsed: dict[bytes, bytes] = {}  # this connection's prepared statements: name -> SQL
        bound = b""
        while True:  # typed messages: a byte, the length, the body
            kind = await reader.readexactly(1)
            head = await reader.readexactly(4)
            body = await reader.readexactly(int.from_bytes(head, "big") - 4)
            if kind == b"P":  # Parse: statement name, SQL
                name, sql = body.split(b"\0", 2)[:2]
                parsed[name] = sql
            elif kind == b"B":  # Bind: portal name, statement name
                bound = parsed.get(body.split(b"\0", 2)[1], b"?")
            elif kind in (b"Q", b"E"):  # a statement runs: the query's own text, or the bound one's
                sql = body.split(b"\0", 1)[0] if kind == b"Q" else bound
                self.sent.append((time.monotonic(), sql[:70].decode(errors="replace")))
            writer.write(kind + head + body)
            await writer.drain()

    @staticmethod
    async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()
