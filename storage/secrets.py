"""Secrets: values encrypted at rest, one per name and mode, never stored or returned in clear.

:class:`SecretCipher` seals a value with AES-GCM under a key derived from the server's master key
(:mod:`storage.master_key`, purpose ``"secrets"``): a random 96-bit nonce per value, and the
secret's name and mode as associated data, so a ciphertext copied onto another secret's row (or
another mode) fails to open instead of handing out the wrong value. :class:`SecretMethods` (part
of the repository) stores and reads the sealed rows; only callers holding the cipher see values.
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, get_args

import sqlalchemy as sa
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from graph_runtime import errors
from storage import convert
from storage.errors import StorageError
from storage.master_key import MasterKey
from storage.repository_base import RepositoryBase
from storage.tables import secret as secret_t

Mode = Literal["prod", "dev"]
MODES: tuple[Mode, ...] = get_args(Mode)
"""The modes a task runs in (SPEC §7); ``prod`` is the default and the fallback value."""
DEFAULT_MODE: Mode = "prod"
NAME_PATTERN = re.compile(r"[A-Za-z0-9_]{1,64}")
"""What a secret's name may be (a full match)."""
NONCE_BYTES = 12


class SecretNotFound(errors.NotFound):
    """No secret has this name (in this mode)."""

    code = "secret_not_found"


@dataclass(frozen=True)
class SecretInfo:
    """A secret as listed: which modes have a value, never the value.

    Attributes:
        modes: the modes with a value of their own, ``prod`` first.
        created: when its first value was stored.
        updated: when a value of it last changed.
    """

    name: str
    modes: tuple[Mode, ...]
    created: datetime
    updated: datetime


class SecretCipher:
    """AES-GCM with a key derived for secrets; the name and mode are authenticated with each value."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    @classmethod
    def from_master(cls, master: MasterKey) -> SecretCipher:
        """The cipher of a deployment: its master key's ``"secrets"`` key."""
        return cls(master.derive("secrets"))

    def seal(self, name: str, mode: str, value: str) -> tuple[bytes, bytes]:
        """``(nonce, ciphertext)`` of ``value``, bound to ``name`` and ``mode``."""
        nonce = os.urandom(NONCE_BYTES)  # random per value: never reused under one key in practice (2^-32 at 2^32 values)
        return nonce, self._aead.encrypt(nonce, value.encode(), _associated(name, mode))

    def open(self, name: str, mode: str, nonce: bytes, ciphertext: bytes) -> str:
        """The value sealed by :meth:`seal` for this name and mode.

        Raises:
            StorageError: it does not open: another master key sealed it, or the row was
                altered or moved from another secret.
        """
        try:
            return self._aead.decrypt(nonce, ciphertext, _associated(name, mode)).decode()
        except InvalidTag:
            raise StorageError(
                f"secret {name!r} ({mode}) cannot be decrypted: it was stored under another master key "
                "(SECRETS_KEY or the key file) or altered; set it again"
            ) from None

    def __repr__(self) -> str:
        return "SecretCipher(***)"


def _associated(name: str, mode: str) -> bytes:
    # A NUL cannot occur in a name or a mode, so no two (name, mode) pairs share these bytes.
    return f"graph-runtime secret\0{name}\0{mode}".encode()


class SecretMethods(RepositoryBase):
    """Storing, listing, deleting and reading secrets (sealed by a :class:`SecretCipher`)."""

    async def put_secret(self, cipher: SecretCipher, name: str, mode: Mode, value: str) -> None:
        """Store ``value`` as the secret's value in ``mode``, replacing one there was."""
        nonce, sealed = cipher.seal(name, mode, value)
        now = convert.utcnow()
        statement = self._insert(secret_t).values(
            name=name, mode=mode, nonce=nonce, ciphertext=sealed, created=now, updated=now
        )
        statement = statement.on_conflict_do_update(
            index_elements=[secret_t.c.name, secret_t.c.mode],
            set_={"nonce": nonce, "ciphertext": sealed, "updated": now},
        )
        async with self._write() as conn:
            await conn.execute(statement)

    async def list_secrets(self) -> list[SecretInfo]:
        """Every secret by name, with the modes that have a value (no value is decrypted)."""
        query = sa.select(secret_t.c.name, secret_t.c.mode, secret_t.c.created, secret_t.c.updated)
        async with self._read() as conn:
            rows = (await conn.execute(query.order_by(secret_t.c.name, secret_t.c.mode))).all()
        grouped: dict[str, list[sa.Row[tuple[str, str, datetime, datetime]]]] = {}
        for row in rows:
            grouped.setdefault(row.name, []).append(row)
        return [SecretInfo(name, tuple(m for m in MODES if m in {r.mode for r in group}),
                           min(r.created for r in group), max(r.updated for r in group))
                for name, group in grouped.items()]

    async def delete_secret(self, name: str, mode: Mode | None = None) -> None:
        """Delete the secret's values (only ``mode``'s when given).

        Raises:
            SecretNotFound: there was nothing to delete.
        """
        statement = sa.delete(secret_t).where(secret_t.c.name == name)
        if mode is not None:
            statement = statement.where(secret_t.c.mode == mode)
        async with self._write() as conn:
            deleted = (await conn.execute(statement)).rowcount
        if not deleted:
            where = f" in mode {mode}" if mode else ""
            raise SecretNotFound(f"no secret is named {name!r}{where}")

    async def secret_names(self, mode: Mode) -> frozenset[str]:
        """The names that have a value in ``mode`` (its own, or the ``prod`` one it falls back to)."""
        query = sa.select(secret_t.c.name).where(secret_t.c.mode.in_({mode, DEFAULT_MODE})).distinct()
        async with self._read() as conn:
            return frozenset((await conn.execute(query)).scalars())

    async def secret_values(self, cipher: SecretCipher, names: Collection[str], mode: Mode) -> dict[str, str]:
        """The values of ``names`` in ``mode``; a name without a value of ``mode`` gets its ``prod`` value.

        Names with no value at all are left out (the caller says which one is missing).
        """
        if not names:
            return {}
        query = sa.select(secret_t).where(secret_t.c.name.in_(set(names)), secret_t.c.mode.in_({mode, DEFAULT_MODE}))
        async with self._read() as conn:
            rows = (await conn.execute(query)).all()
        # The mode's own value wins over prod's: read prod first, let the mode's overwrite it.
        found = {}
        for row in sorted(rows, key=lambda r: r.mode != DEFAULT_MODE):
            found[row.name] = row
        return {name: cipher.open(name, row.mode, row.nonce, row.ciphertext) for name, row in found.items()}
