"""Server keys: issuing tokens, reading them from any accepted place, checking scope.

A token is base64(``<key id>:<secret>``), so ``Authorization: Basic <token>`` (Scade's snippets)
and ``curl -u <key id>:<secret>`` are the same thing. Only a SHA-256 of the secret is stored: the
secret is 32 random bytes, so a slow password hash adds nothing but latency to every request.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from http_api import errors
from nodes.errors import GraphRuntimeError
from storage.convert import ApiKeyRecord
from storage.repository import Repository

SCOPES = ("admin", "execute")
TOUCH_EVERY_S = 60.0
# A key revoked by another process is refused here within this (plus one read): within a second
# everywhere (issue 8), with room for a slow read. Polls on one key cost two reads of it a second
# (~1 ms each, on aiosqlite's thread) however many arrive: 4,000 polls/s measured before this.
CACHE_TTL_S = 0.5

REQUEST_KEY = web.RequestKey("key", ApiKeyRecord)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def new_key_material() -> tuple[str, str]:
    """A fresh (key id, secret) pair."""
    return "k" + secrets.token_hex(8), secrets.token_urlsafe(32)


def token_for(key_id: str, secret: str) -> str:
    return base64.b64encode(f"{key_id}:{secret}".encode()).decode()


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


async def issue_key(repo: Repository, name: str, scope: str) -> tuple[ApiKeyRecord, str]:
    """Create a key; return its record and the token, which is never retrievable again."""
    key_id, secret = new_key_material()
    record = await repo.insert_key(key_id, name, scope, hash_secret(secret))
    return record, token_for(key_id, secret)


def parse_token(token: str) -> tuple[str, str] | None:
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    key_id, sep, secret = decoded.partition(":")
    return (key_id, secret) if sep and key_id and secret else None


def token_from(request: web.Request) -> str | None:
    """Basic or Bearer header, ``execution-key`` header (Ziggy), or ``?execution-key=``."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() in ("basic", "bearer") and value.strip():
        return value.strip()
    return request.headers.get("execution-key") or request.query.get("execution-key")


@dataclass
class KeyChecker:
    """Verifies tokens against the repository, with a short cache so polls stay cheap.

    A key is read again once its cached copy is :data:`CACHE_TTL_S` old: a key revoked by another
    process (the CLI, another server) stops working here within that, and a poll costs a read of
    its key at most that often instead of once per request. One read per key at a time: requests
    arriving meanwhile wait for it, and a read begun before a revoke here never refills the cache.
    """

    repo: Repository
    _cache: dict[str, tuple[ApiKeyRecord | None, float]] = field(default_factory=dict)
    _reads: dict[str, asyncio.Task[ApiKeyRecord | None]] = field(default_factory=dict)
    _touched: dict[str, float] = field(default_factory=dict)
    _writes: set[asyncio.Task[None]] = field(default_factory=set)

    async def close(self) -> None:
        """Let pending reads and last_used writes finish before the database closes."""
        pending = [*self._writes, *self._reads.values()]
        if pending:
            await asyncio.wait(pending, timeout=2)
        for task in pending:
            task.cancel()

    def forget(self, key_id: str) -> None:
        """Drop a cached key (after a revoke) so it stops working at once."""
        self._cache.pop(key_id, None)
        self._reads.pop(key_id, None)  # its result may predate the revoke: it must not be cached

    async def _record(self, key_id: str) -> ApiKeyRecord | None:
        cached = self._cache.get(key_id)
        if cached is not None and time.monotonic() - cached[1] < CACHE_TTL_S:
            return cached[0]
        read = self._reads.get(key_id)
        if read is None:
            read = self._reads[key_id] = asyncio.create_task(self._read(key_id))
            read.add_done_callback(_retrieved)
        # Shielded: a client that goes away does not cancel the read the others wait for.
        return await asyncio.shield(read)

    async def _read(self, key_id: str) -> ApiKeyRecord | None:
        began = time.monotonic()  # the copy is as old as the read's start: a revoke may land during it
        try:
            record = await self.repo.get_key(key_id)
        finally:
            ours = self._reads.get(key_id) is asyncio.current_task()
            if ours:
                del self._reads[key_id]
        if ours:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[key_id] = (record, began)
        return record

    async def check(self, token: str | None) -> ApiKeyRecord:
        """The key behind ``token``, or :class:`errors.Unauthenticated`."""
        parsed = parse_token(token) if token else None
        if parsed is None:
            raise errors.Unauthenticated()
        key_id, secret = parsed
        record = await self._record(key_id)
        expected = record.secret_hash if record else hash_secret("")
        if not hmac.compare_digest(expected, hash_secret(secret)) or record is None or record.revoked:
            raise errors.Unauthenticated("this server key is unknown or revoked")
        await self._touch(record)
        return record

    async def _touch(self, record: ApiKeyRecord) -> None:
        # last_used is worth a write a minute per key, not one per poll; and it is written in the
        # background, so a read never waits for (or fails on) a busy database.
        now = time.monotonic()
        if now - self._touched.get(record.id, -TOUCH_EVERY_S) >= TOUCH_EVERY_S:
            self._touched[record.id] = now
            write = asyncio.create_task(self._write_last_used(record.id, datetime.now(UTC)))
            self._writes.add(write)
            write.add_done_callback(self._writes.discard)

    async def _write_last_used(self, key_id: str, when: datetime) -> None:
        with contextlib.suppress(GraphRuntimeError):  # best effort: the next use tries again
            await self.repo.touch_key(key_id, when)


def _retrieved(read: asyncio.Task[Any]) -> None:
    """Mark a read's failure as seen: every waiter may have gone away (it is raised to those that have not)."""
    if not read.cancelled():
        read.exception()


def requires(scope: str) -> Callable[[Handler], Handler]:
    """Mark a handler as needing ``scope`` (handlers are ``execute`` unless marked)."""

    def mark(handler: Handler) -> Handler:
        handler.scope = scope  # type: ignore[attr-defined]
        return handler

    return mark


def public(handler: Handler) -> Handler:
    handler.public = True  # type: ignore[attr-defined]
    return handler


def signed_link(handler: Handler) -> Handler:
    """Mark a handler that serves signed links: with ``?signature=`` it checks the link itself, no key."""
    handler.signed_link = True  # type: ignore[attr-defined]
    return handler


def make_auth_middleware(checker: KeyChecker) -> Any:
    @web.middleware
    async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        route_handler = request.match_info.handler
        is_preflight = request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers
        if is_preflight or getattr(route_handler, "public", False) or request.match_info.http_exception:
            return await handler(request)
        if getattr(route_handler, "signed_link", False) and "signature" in request.query:
            return await handler(request)  # the link is the credential: the handler verifies it
        key = await checker.check(token_from(request))
        if getattr(route_handler, "scope", "execute") == "admin" and key.scope != "admin":
            raise errors.Forbidden(f"key {key.id!r} has scope {key.scope!r}; this needs an admin key")
        request[REQUEST_KEY] = key
        return await handler(request)

    return auth_middleware
