"""Server keys. Hashing and tokens belong to the HTTP layer; this stores what it computed."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from graph_runtime import errors
from storage import convert
from storage.convert import ApiKeyRecord
from storage.repository_base import RepositoryBase
from storage.tables import api_key as key_t


class KeyMethods(RepositoryBase):
    """Creating, reading, revoking and touching server keys."""

    async def insert_key(self, key_id: str, name: str, scope: str, secret_hash: str) -> ApiKeyRecord:
        """Store a new key and return it (never used, not revoked)."""
        record = ApiKeyRecord(
            id=key_id,
            name=name,
            scope=scope,
            secret_hash=secret_hash,
            created=convert.utcnow(),
            last_used=None,
            revoked=False,
        )
        async with self._write() as conn:
            await conn.execute(
                sa.insert(key_t).values(
                    id=key_id, name=name, scope=scope, secret_hash=secret_hash, created=record.created
                )
            )
        return record

    async def get_key(self, key_id: str) -> ApiKeyRecord | None:
        """The key with this id, revoked or not; None if there is none."""
        async with self._read() as conn:
            row = (await conn.execute(sa.select(key_t).where(key_t.c.id == key_id))).first()
        return None if row is None else convert.api_key(row)

    async def list_keys(self) -> list[ApiKeyRecord]:
        """Every key, revoked ones included, oldest first."""
        async with self._read() as conn:
            rows = await conn.execute(sa.select(key_t).order_by(key_t.c.created, key_t.c.id))
            return [convert.api_key(row) for row in rows]

    async def revoke_key(self, key_id: str) -> ApiKeyRecord:
        """Revoke a key (revoking it again changes nothing) and return it.

        Raises:
            errors.KeyNotFound: no key has this id.
        """
        now = sa.literal(convert.utcnow(), key_t.c.revoked.type)
        async with self._write() as conn:
            row = (
                await conn.execute(
                    sa.update(key_t)
                    .where(key_t.c.id == key_id)
                    .values(revoked=sa.func.coalesce(key_t.c.revoked, now))  # the first revocation stays
                    .returning(*key_t.c)
                )
            ).first()
        if row is None:
            raise errors.KeyNotFound(f"no key has the id {key_id!r}")
        return convert.api_key(row)

    async def touch_key(self, key_id: str, when: datetime) -> None:
        """Record that the key was used at ``when``; it never moves ``last_used`` backwards.

        Each call is a write: callers on a hot path should call it at most every so often
        (the HTTP layer does, once a minute per key). An unknown key is ignored.
        """
        async with self._write() as conn:
            await conn.execute(
                sa.update(key_t)
                .where(key_t.c.id == key_id, sa.or_(key_t.c.last_used.is_(None), key_t.c.last_used < when))
                .values(last_used=when)
            )

    async def count_keys(self) -> int:
        """How many keys exist, revoked ones included (``serve`` creates one on an empty database)."""
        async with self._read() as conn:
            return (await conn.execute(sa.select(sa.func.count()).select_from(key_t))).scalar_one()
