"""The server's master key: one secret from which every key the server needs is derived.

Secrets are encrypted with a key derived for "secrets", signed download links are signed with
one derived for "file-links", and so on: one thing to back up and to share between machines.
It comes from ``SECRETS_KEY`` (base64 of 32 bytes, the same on every machine of a deployment),
else from a key file made with mode 0600 on first start next to the SQLite database (or in the
working directory for PostgreSQL). Losing it makes stored secrets unreadable.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
import time
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy.engine import make_url

from storage.errors import StorageError

KEY_BYTES = 32
KEY_FILE_NAME = "graph_runtime.key"


class MasterKey:
    """The master key; :meth:`derive` gives an independent 32-byte key per purpose."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise StorageError(f"the master key must be {KEY_BYTES} bytes, not {len(key)}")
        self._key = key

    def derive(self, purpose: str) -> bytes:
        """A key for ``purpose`` (e.g. ``"secrets"``, ``"file-links"``): HKDF-SHA256 of the master key."""
        return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None,
                    info=f"graph-runtime {purpose}".encode()).derive(self._key)

    def __repr__(self) -> str:
        return "MasterKey(***)"


def key_file_for(database_url: str) -> Path:
    """Where the key file lives: next to a SQLite database file, else in the working directory."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        return Path(url.database).resolve().parent / KEY_FILE_NAME
    return Path.cwd() / KEY_FILE_NAME


def load(database_url: str, configured: str | None = None) -> MasterKey:
    """The master key from ``configured`` (``SECRETS_KEY``) or the key file, made on first use.

    Raises:
        StorageError: ``configured`` is not base64 of 32 bytes, or the key file is unreadable.
    """
    if configured:
        return MasterKey(_decode(configured, "SECRETS_KEY"))
    path = key_file_for(database_url)
    try:
        # O_EXCL: of several processes starting together, one writes the file, the others read it.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return MasterKey(_read(path))
    with os.fdopen(fd, "w") as out:
        out.write(base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode() + "\n")
    return MasterKey(_read(path))


def _read(path: Path) -> bytes:
    try:
        text = path.read_text().strip()
    except OSError as exc:
        raise StorageError(f"cannot read the key file {path}: {exc.strerror}") from exc
    if not text:  # another process is writing it right now
        time.sleep(0.05)
        text = path.read_text().strip()
    return _decode(text, str(path))


def _decode(text: str, where: str) -> bytes:
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise StorageError(f"{where} is not base64 (make one with: openssl rand -base64 32)") from None
    if len(key) != KEY_BYTES:
        raise StorageError(f"{where} must hold {KEY_BYTES} bytes, not {len(key)} (make one with: openssl rand -base64 32)")
    return key
