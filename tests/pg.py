"""The machine's PostgreSQL for tests: find a trust-auth user, create and drop throwaway databases."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable

import asyncpg
import pytest

import storage

PG_HOST = "127.0.0.1:5432"
PG_USERS = ("postgres", "root")


async def create_schema(url: str) -> None:
    engine = storage.create_engine(url)
    try:
        await storage.create_schema(engine)
    finally:
        await storage.dispose(engine)


async def find_user() -> tuple[str | None, str]:
    """The first user that can log in with trust auth, or None and why not."""
    reason = "no user tried"
    for user in PG_USERS:
        try:
            conn = await asyncpg.connect(f"postgresql://{user}@{PG_HOST}/postgres", timeout=2)
        except (OSError, asyncpg.PostgresError) as exc:  # TimeoutError is an OSError
            reason = f"{type(exc).__name__}: {exc}"
            continue
        await conn.close()
        return user, ""
    return None, reason


async def admin(user: str, sql: str) -> None:
    conn = await asyncpg.connect(f"postgresql://{user}@{PG_HOST}/postgres", timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def create_database(user: str) -> str:
    """A new empty database ``gr_test_<hex>`` with the schema; returns its URL."""
    name = f"gr_test_{secrets.token_hex(6)}"
    await admin(user, f'CREATE DATABASE "{name}"')
    url = f"postgresql+asyncpg://{user}@{PG_HOST}/{name}"
    try:
        await create_schema(url)
    except BaseException:
        await drop_database(url)
        raise
    return url


async def drop_database(url: str) -> None:
    user, name = url.split("//", 1)[1].split("@", 1)[0], url.rsplit("/", 1)[1]
    await admin(user, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run_on_a_new_database(run: Callable[[str], None]) -> None:
    """``run(url)`` on a database of its own, dropped afterwards; the test is skipped when no
    PostgreSQL answers. For tests that start processes (synchronous test functions)."""
    user, reason = asyncio.run(find_user())
    if user is None:
        pytest.skip(f"PostgreSQL is not reachable at {PG_HOST} ({reason})")
    url = asyncio.run(create_database(user))
    try:
        run(url)
    finally:
        asyncio.run(drop_database(url))
