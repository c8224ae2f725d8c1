"""Signed download links (SPEC §7): ``/api/v1/files/<id>?expires=<unix s>&signature=<hex>``.

The signature is HMAC-SHA256 over ``"<id>:<expires>"`` with a key derived from the server's
master key for ``"file-links"`` (``MasterKey.derive``), so every machine sharing ``SECRETS_KEY``
accepts the others' links, and rotating the master key revokes every link at once. A link needs
no server key until it expires; one for another file, or with any digit changed, is refused.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from typing import Any
from urllib.parse import quote

from http_api import errors
from nodes.files import FILE_KEY, File

FILES_PATH = "/api/v1/files"
_DIGITS = re.compile(r"[0-9]{1,12}")
_HEX = re.compile(r"[0-9a-fA-F]{64}")
PURPOSE = "file-links"
"""The master-key purpose whose derived key signs links."""


class LinkExpired(errors.Forbidden):
    """This download link has expired; ask the API for a fresh one (every answer carries a new url)."""

    code = "link_expired"


class LinkInvalid(errors.Forbidden):
    """This download link's signature does not match: it was changed, or it is for another file."""

    code = "link_invalid"


class FileLinks:
    """Makes and checks signed links.

    Args:
        key: the 32-byte signing key (``MasterKey.derive("file-links")``).
        ttl_s: how long a new link works (``FILE_LINK_TTL_S``).
    """

    def __init__(self, key: bytes, ttl_s: int) -> None:
        self._key = key
        self.ttl_s = ttl_s

    def signature(self, file_id: str, expires: int) -> str:
        """The hex signature of a link to ``file_id`` that works until ``expires`` (unix seconds)."""
        return hmac.new(self._key, f"{file_id}:{expires}".encode(), hashlib.sha256).hexdigest()

    def url_for(self, file: File | dict[str, Any], now: float | None = None) -> str:
        """The relative signed URL of a file (a :class:`File` or a file value), valid for ``ttl_s``."""
        file_id = file.id if isinstance(file, File) else str(file[FILE_KEY])
        expires = int(time.time() if now is None else now) + self.ttl_s
        return f"{FILES_PATH}/{quote(file_id, safe='')}?expires={expires}&signature={self.signature(file_id, expires)}"

    def with_url(self, value: dict[str, Any], now: float | None = None) -> dict[str, Any]:
        """A copy of a file value with its ``url`` added."""
        return {**value, "url": self.url_for(value, now)}

    def check(self, file_id: str, expires: str, signature: str, now: float | None = None) -> None:
        """Accept a link's ``expires`` and ``signature`` for ``file_id``, or raise.

        Raises:
            LinkInvalid: the signature is not this file's for this expiry (or is malformed).
            LinkExpired: the signature is right but the link's time is up.
        """
        if not _DIGITS.fullmatch(expires):
            raise LinkInvalid(field="expires")
        expected = self.signature(file_id, int(expires))
        if not _HEX.fullmatch(signature) or not hmac.compare_digest(expected, signature.lower()):
            raise LinkInvalid(field="signature")
        if int(expires) < (time.time() if now is None else now):
            raise LinkExpired(field="expires")
