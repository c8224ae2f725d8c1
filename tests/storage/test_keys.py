"""Server keys: stored hashed by the HTTP layer, listed, revoked, touched."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from graph_runtime import errors
from storage.repository import ApiKeyRecord, Repository

T0 = datetime(2026, 11, 23, 21, 14, 34, 800001, tzinfo=UTC)


async def test_a_key_is_stored_and_read_back(repo: Repository) -> None:
    assert await repo.count_keys() == 0
    inserted = await repo.insert_key("k1", "ci", "execute", "hash-1")
    assert isinstance(inserted, ApiKeyRecord)
    assert (inserted.id, inserted.name, inserted.scope, inserted.secret_hash) == ("k1", "ci", "execute", "hash-1")
    assert inserted.created.utcoffset() == timedelta(0)
    assert (inserted.last_used, inserted.revoked) == (None, False)
    assert await repo.get_key("k1") == inserted
    assert await repo.get_key("nope") is None
    assert await repo.count_keys() == 1


async def test_keys_are_listed_oldest_first(repo: Repository) -> None:
    await repo.insert_key("b", "first", "admin", "h")
    await repo.insert_key("a", "second", "execute", "h")
    assert [k.name for k in await repo.list_keys()] == ["first", "second"]


async def test_a_revoked_key_stays_listed_as_revoked(repo: Repository) -> None:
    await repo.insert_key("k1", "ci", "execute", "h")
    revoked = await repo.revoke_key("k1")
    assert revoked.revoked and (await repo.get_key("k1")) == revoked
    assert await repo.revoke_key("k1") == revoked
    assert [k.revoked for k in await repo.list_keys()] == [True]
    assert await repo.count_keys() == 1


async def test_revoking_an_unknown_key_is_not_found(repo: Repository) -> None:
    with pytest.raises(errors.KeyNotFound):
        await repo.revoke_key("nope")


async def test_touch_records_when_a_key_was_last_used(repo: Repository) -> None:
    await repo.insert_key("k1", "ci", "execute", "h")
    await repo.touch_key("k1", T0)
    assert (await repo.get_key("k1")).last_used == T0  # type: ignore[union-attr]
    await repo.touch_key("k1", T0 - timedelta(hours=1))  # a late writer never moves it back
    assert (await repo.get_key("k1")).last_used == T0  # type: ignore[union-attr]
    await repo.touch_key("k1", T0 + timedelta(minutes=5))
    assert (await repo.get_key("k1")).last_used == T0 + timedelta(minutes=5)  # type: ignore[union-attr]
    await repo.touch_key("nope", T0)  # an unknown key is ignored
