"""Secrets at rest: AES-GCM sealed per name and mode, read back per mode with prod as the fallback,
and the plaintext nowhere in the database's bytes (the SQLite file, PostgreSQL's raw column)."""

from __future__ import annotations

import base64
import secrets
from pathlib import Path

import pytest
import sqlalchemy as sa

from storage import master_key
from storage.errors import StorageError
from storage.repository import Repository
from storage.secrets import SecretCipher, SecretNotFound

VALUE = "sk-live-" + "9f3a" * 8


@pytest.fixture
async def secret_repo(repo: Repository) -> Repository:
    """The repository with no secrets left by an earlier test (PostgreSQL's database is shared)."""
    async with repo.engine.begin() as conn:
        await conn.execute(sa.text("DELETE FROM secret"))
    return repo


@pytest.fixture
def cipher() -> SecretCipher:
    return SecretCipher.from_master(master_key.MasterKey(secrets.token_bytes(32)))


async def test_a_value_is_stored_sealed_and_read_back(secret_repo: Repository, cipher: SecretCipher) -> None:
    await secret_repo.put_secret(cipher, "OPENAI_API_KEY", "prod", VALUE)
    assert await secret_repo.secret_values(cipher, ["OPENAI_API_KEY"], "prod") == {"OPENAI_API_KEY": VALUE}
    async with secret_repo.engine.connect() as conn:
        row = (await conn.execute(sa.text("SELECT nonce, ciphertext FROM secret"))).one()
    assert len(row.nonce) == 12 and VALUE.encode() not in bytes(row.ciphertext)
    assert len(row.ciphertext) == len(VALUE) + 16  # AES-GCM: the text plus a 16-byte tag


async def test_a_mode_without_its_own_value_uses_prod(secret_repo: Repository, cipher: SecretCipher) -> None:
    await secret_repo.put_secret(cipher, "KEY", "prod", "prod-value")
    await secret_repo.put_secret(cipher, "ONLY_DEV", "dev", "dev-only")
    assert await secret_repo.secret_values(cipher, ["KEY", "ONLY_DEV"], "dev") == {"KEY": "prod-value",
                                                                                   "ONLY_DEV": "dev-only"}
    await secret_repo.put_secret(cipher, "KEY", "dev", "dev-value")
    assert await secret_repo.secret_values(cipher, ["KEY"], "dev") == {"KEY": "dev-value"}
    assert await secret_repo.secret_values(cipher, ["KEY", "ONLY_DEV", "NONE"], "prod") == {"KEY": "prod-value"}
    assert await secret_repo.secret_names("prod") == {"KEY"}
    assert await secret_repo.secret_names("dev") == {"KEY", "ONLY_DEV"}


async def test_listing_shows_modes_and_times_and_a_put_replaces(secret_repo: Repository, cipher: SecretCipher) -> None:
    await secret_repo.put_secret(cipher, "B", "dev", "1")
    await secret_repo.put_secret(cipher, "A", "prod", "1")
    await secret_repo.put_secret(cipher, "B", "prod", "2")
    first = {s.name: s for s in await secret_repo.list_secrets()}
    await secret_repo.put_secret(cipher, "B", "prod", "3")
    listed = await secret_repo.list_secrets()
    assert [(s.name, s.modes) for s in listed] == [("A", ("prod",)), ("B", ("prod", "dev"))]
    assert listed[1].created == first["B"].created and listed[1].updated > first["B"].updated
    assert await secret_repo.secret_values(cipher, ["B"], "prod") == {"B": "3"}


async def test_delete_takes_every_mode_or_one(secret_repo: Repository, cipher: SecretCipher) -> None:
    for name in ("A", "B"):
        await secret_repo.put_secret(cipher, name, "prod", "p")
        await secret_repo.put_secret(cipher, name, "dev", "d")
    await secret_repo.delete_secret("A", "dev")
    assert [(s.name, s.modes) for s in await secret_repo.list_secrets()] == [("A", ("prod",)), ("B", ("prod", "dev"))]
    await secret_repo.delete_secret("B")
    assert [s.name for s in await secret_repo.list_secrets()] == ["A"]
    with pytest.raises(SecretNotFound):
        await secret_repo.delete_secret("B")
    with pytest.raises(SecretNotFound, match="in mode dev"):
        await secret_repo.delete_secret("A", "dev")


async def test_a_ciphertext_moved_to_another_secret_or_key_does_not_open(secret_repo: Repository,
                                                                         cipher: SecretCipher) -> None:
    await secret_repo.put_secret(cipher, "A", "prod", "value-of-a")
    await secret_repo.put_secret(cipher, "B", "prod", "value-of-b")
    async with secret_repo.engine.begin() as conn:  # an attacker with write access swaps the rows' contents
        await conn.execute(sa.text(
            "UPDATE secret SET nonce = (SELECT nonce FROM secret WHERE name = 'A'),"
            " ciphertext = (SELECT ciphertext FROM secret WHERE name = 'A') WHERE name = 'B'"))
    with pytest.raises(StorageError, match=r"'B'.*cannot be decrypted"):
        await secret_repo.secret_values(cipher, ["B"], "prod")
    other = SecretCipher.from_master(master_key.MasterKey(secrets.token_bytes(32)))
    with pytest.raises(StorageError, match="another master key"):
        await secret_repo.secret_values(other, ["A"], "prod")


async def test_the_plaintext_is_not_in_the_database_bytes(secret_repo: Repository, cipher: SecretCipher,
                                                           database_url: str) -> None:
    await secret_repo.put_secret(cipher, "KEY", "prod", VALUE)
    await secret_repo.put_secret(cipher, "KEY", "dev", VALUE + "-dev")
    if database_url.startswith("sqlite"):
        await secret_repo.engine.dispose()  # the WAL checkpointed into the file
        path = Path(database_url.split("///", 1)[1])
        raw = b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
        assert b"KEY" in raw  # the name is there: the file is the right one
    else:
        async with secret_repo.engine.connect() as conn:
            rows = (await conn.execute(sa.text("SELECT name, mode, nonce, ciphertext FROM secret"))).all()
        raw = b"".join(r.name.encode() + r.mode.encode() + bytes(r.nonce) + bytes(r.ciphertext) for r in rows)
        assert len(rows) == 2
    for form in (VALUE.encode(), base64.b64encode(VALUE.encode()), VALUE.encode().hex().encode()):
        assert form not in raw


def test_the_cipher_never_shows_its_key(cipher: SecretCipher) -> None:
    assert repr(cipher) == "SecretCipher(***)"
