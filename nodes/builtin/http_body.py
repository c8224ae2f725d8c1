"""Reading an HTTP response body with a bound on its decoded size (``http_request``).

A few compressed bytes can inflate to gigabytes (a gzip bomb), so the node decodes gzip and
deflate itself, in bounded steps, counting the decoded size as it grows; aiohttp's own decoding
is switched off for its requests.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator, Iterator

import aiohttp

from nodes import errors

_CHUNK_BYTES = 64 * 1024
# The Content-Encodings decoded here: what a request advertises unless it sets Accept-Encoding.
ACCEPT_ENCODING = "gzip, deflate"
_ZLIB_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
# Output of one inflate call: a 64 KiB network chunk of a bomb inflates to ~64 MB at once.
_INFLATE_STEP = 256 * 1024
# Real bodies have one gzip member, rarely a few; each new one copies the rest of its chunk.
_MAX_MEMBERS = 1024


async def read(resp: aiohttp.ClientResponse, max_bytes: int, shown_url: str) -> bytes:
    """The decoded body, refused as soon as more than ``max_bytes`` of it is decoded.

    The node decodes gzip and deflate itself, in bounded steps, so that a few compressed
    bytes that inflate to gigabytes never take more than ``max_bytes`` of memory.
    """
    body = bytearray()
    async for piece in chunks(resp, max_bytes, shown_url):
        body += piece
    return bytes(body)


async def chunks(resp: aiohttp.ClientResponse, max_bytes: int, shown_url: str) -> AsyncIterator[bytes]:
    """The decoded body in pieces of at most ~256 KiB, for streaming it into the file store.

    Raises:
        errors.NodeFailed: more than ``max_bytes`` decoded, or an unsupported or corrupt encoding.
    """
    too_large = errors.NodeFailed(f"response from {shown_url} is larger than {max_bytes} bytes")
    encoding = ", ".join(resp.headers.getall("Content-Encoding", ())).strip().lower()
    inflater = _Inflater(encoding) if encoding in _ZLIB_WBITS else None
    # Deflate grows a body by at most ~0.03% plus a header (zlib's compressBound): more on the
    # wire than this is not a compressed body of at most max_bytes (empty blocks sent forever).
    wire_limit = max_bytes if inflater is None else max_bytes + max_bytes // 64 + 4096
    if resp.content_length is not None and resp.content_length > wire_limit:
        raise too_large
    decoded = wire = 0
    try:
        async for chunk in resp.content.iter_chunked(_CHUNK_BYTES):
            wire += len(chunk)
            if inflater is None and encoding not in ("", "identity"):
                raise _unsupported_encoding(shown_url, encoding)  # only once there is a body to decode
            pieces = [chunk] if inflater is None else inflater.pieces(chunk, max_bytes + 1 - decoded)
            for piece in pieces:
                decoded += len(piece)
                if decoded > max_bytes:
                    raise too_large
                yield piece
            if wire > wire_limit:
                raise too_large
    except zlib.error as exc:
        raise errors.NodeFailed(
            f"response from {shown_url} is not valid {encoding}: {exc}"
        ) from exc


def _unsupported_encoding(shown_url: str, encoding: str) -> errors.NodeFailed:
    return errors.NodeFailed(
        f"response from {shown_url} has Content-Encoding {encoding!r}; "
        f"only {ACCEPT_ENCODING} and identity are decoded"
    )


class _Inflater:
    """Inflates a gzip or deflate body in bounded steps, however much one chunk expands.

    aiohttp's own decoding is not used: the node must count the decoded size as it grows and
    stop at its limit, and fail clearly on an encoding it cannot decode.
    """

    def __init__(self, encoding: str) -> None:
        self._wbits = _ZLIB_WBITS[encoding]
        self._member: zlib._Decompress | None = None
        self._members = 0
        self._held = b""  # input not inflated yet because the output reached its limit

    def pieces(self, data: bytes, limit: int) -> Iterator[bytes]:
        """``data`` inflated, in pieces of at most one step, stopping after ``limit`` bytes."""
        while limit > 0:
            out = bytearray()
            self.feed(data, out, min(_INFLATE_STEP, limit))
            data = b""
            if not out:
                return
            limit -= len(out)
            yield bytes(out)

    def feed(self, data: bytes, body: bytearray, limit: int) -> None:
        """Inflate ``data`` onto the end of ``body``, stopping once ``body`` holds ``limit`` bytes.

        Raises:
            zlib.error: the data is not valid for the encoding.
        """
        data = self._held + data if self._held else data
        while len(body) < limit:
            member = self._member
            if member is None or member.eof:
                if not data:
                    break
                member = self._next_member(data)
            piece = member.decompress(data, min(_INFLATE_STEP, limit - len(body)))
            body += piece
            data = member.unused_data if member.eof else member.unconsumed_tail
            if not piece and not data:
                break  # everything given is inflated; zlib holds no output back
        self._held = data

    def _next_member(self, data: bytes) -> zlib._Decompress:
        # gzip allows concatenated members; aiohttp and browsers decode them all.
        self._members += 1
        if self._members > _MAX_MEMBERS:
            raise zlib.error(f"more than {_MAX_MEMBERS} compressed members")
        wbits = self._wbits
        if wbits == zlib.MAX_WBITS and data[0] & 0x0F != 8:
            wbits = -zlib.MAX_WBITS  # "deflate" sent raw, without its zlib header, as some do
        self._member = zlib.decompressobj(wbits)
        return self._member
