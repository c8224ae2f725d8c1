"""HTTP download semantics for stored files: ETag, conditional GET, one byte range, Content-Disposition.

RFC 9110: a single ``bytes=`` range is served as 206; a syntactically bad, multi-range or
``If-Range``-stale request gets the whole file (a server may ignore Range); a range starting
past the end is 416. The ETag is the file's SHA-256, strong, as the bytes never change.
"""

from __future__ import annotations

import re
from urllib.parse import quote

from aiohttp import hdrs, web

from nodes.files import File

UNSATISFIABLE = (-1, -1)
"""What :func:`requested_range` returns for a range the file cannot satisfy (answer 416)."""
_RANGE = re.compile(r"bytes=(\d{0,19})-(\d{0,19})")
_UNSAFE_ASCII = re.compile(r'[^\x20-\x7e]|["\\%]')


def etag(file: File) -> str:
    return f'"{file.sha256}"'


def file_headers(file: File) -> dict[str, str]:
    """The headers every answer about this file carries (200, 206 and 304 alike)."""
    return {
        hdrs.CONTENT_TYPE: file.content_type,
        hdrs.ETAG: etag(file),
        hdrs.ACCEPT_RANGES: "bytes",
        hdrs.CONTENT_DISPOSITION: content_disposition(file.name),
        # Uploaded bytes are served from the API's origin: never let a browser run them as a page.
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "sandbox",
        hdrs.CACHE_CONTROL: "private, max-age=0, must-revalidate",
    }


def content_disposition(name: str) -> str:
    """``attachment`` with an ASCII ``filename`` and, for anything else, RFC 6266's ``filename*``."""
    fallback = _UNSAFE_ASCII.sub("_", name) or "file"
    if fallback == name:
        return f'attachment; filename="{name}"'
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


def not_modified(if_none_match: str | None, file: File) -> bool:
    """Whether ``If-None-Match`` names this file's ETag (weak comparison, ``*`` included)."""
    if not if_none_match:
        return False
    tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return "*" in tags or etag(file) in tags


def requested_range(request: web.Request, file: File) -> tuple[int, int] | None:
    """The ``[start, end)`` asked for; None for the whole file; :data:`UNSATISFIABLE` for a 416."""
    header = request.headers.get(hdrs.RANGE)
    if not header:
        return None
    if_range = request.headers.get(hdrs.IF_RANGE)
    if if_range is not None and if_range.strip() != etag(file):
        return None  # the client's copy is another version: send it all
    match = _RANGE.fullmatch(header.replace(" ", ""))
    if match is None or match.group(1) == match.group(2) == "":
        return None
    first, last = match.groups()
    if first == "":  # the last N bytes
        length = int(last)
        if length == 0 or file.size == 0:
            return UNSATISFIABLE
        return max(file.size - length, 0), file.size
    start = int(first)
    end = file.size if last == "" else min(int(last) + 1, file.size)
    if start >= file.size or end <= start:
        return UNSATISFIABLE
    return start, end
