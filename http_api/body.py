"""Reading request bodies and query values, with the SPEC's 400/408/413/415/422 answers."""

from __future__ import annotations

import asyncio
import re
import zlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from http_api import errors, yaml_body
from nodes import codec

SERVICES = web.AppKey("services", object)
JSON_TYPES = ("application/json", "application/octet-stream", "text/plain")
# `curl -d '{...}'` without -H sends this type; a pasted snippet that forgot the header still works
# when the body is JSON, and real form data is still refused with 415.
CURL_DEFAULT = "application/x-www-form-urlencoded"


MAX_JSON_DEPTH = 64
_DIGITS = re.compile(r"[0-9]{1,18}")
# Content-Encoding → zlib's wbits. "deflate" is zlib-wrapped by RFC 9110; raw deflate is sniffed below.
DECODERS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


def too_deep(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether ``value`` nests objects/arrays deeper than ``limit`` (iterative: no recursion limit)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        for child in children:
            if isinstance(child, (dict, list)):
                if depth + 1 > limit:
                    return True
                stack.append((child, depth + 1))
    return False


def _content_encoding(request: web.Request) -> str | None:
    """The body's Content-Encoding if it is one we decode, None for none; anything else is a 415."""
    value = ", ".join(request.headers.getall("Content-Encoding", ())).strip().lower()
    if value in ("", "identity"):
        return None
    if value not in DECODERS:
        raise errors.UnsupportedEncoding(f"Content-Encoding {value[:100]!r} is not supported; send the body "
                                         "as is, or gzip or deflate it", field="Content-Encoding")
    return value


def _too_large(limit: int) -> errors.BodyTooLarge:
    return errors.BodyTooLarge(f"the request body is larger than the server accepts ({limit} bytes, decoded; "
                               "see GRAPH_RUNTIME_MAX_BODY_BYTES)")


async def _decoded(stream: aiohttp.StreamReader, encoding: str, limit: int) -> bytes:
    """The body decoded as it arrives; 413 as soon as the bytes received or decoded pass ``limit``.

    Never more than ``limit + 1`` decoded bytes exist at once, so a gzip bomb costs no memory.
    """
    out, received, decoder = bytearray(), 0, None
    async for chunk in stream.iter_any():
        received += len(chunk)
        if received > limit:
            raise _too_large(limit)
        if decoder is None:
            raw_deflate = encoding == "deflate" and chunk[0] & 0x0F != 8  # no zlib header: what some clients send
            decoder = zlib.decompressobj(-zlib.MAX_WBITS if raw_deflate else DECODERS[encoding])
        try:
            out += decoder.decompress(chunk, limit + 1 - len(out))
        except zlib.error as exc:
            raise errors.BodyUnreadable(f"the body is not valid {encoding}: {exc}") from None
        if len(out) > limit:
            raise _too_large(limit)
    if decoder is not None and (not decoder.eof or decoder.unused_data):
        raise errors.BodyUnreadable(f"the body is not valid {encoding}: it ends early or goes on after its end")
    return bytes(out)


def _stop_reading(request: web.Request) -> None:
    """Parse nothing more from this connection, and close it once the answer is written.

    Without this aiohttp lingers up to 10 s reading the rest of a body no one will use (a slow
    client keeps its connection), or re-reads a broken one and logs an error.
    """
    request.protocol.close()
    request.content.feed_eof()


async def read_body(request: web.Request) -> bytes:
    """The whole body, decoded, within GRAPH_RUNTIME_BODY_TIMEOUT_S (else 408, and the connection closes).

    Content-Encoding gzip and deflate are decoded here (the server runs with aiohttp's
    ``auto_decompress`` off, so br/zstd reach us and get a JSON 415, not the parser's plain 400).
    A runner left at aiohttp's default has decoded gzip/deflate already: then its bytes are read.
    """
    settings = request.app[SERVICES].settings  # type: ignore[attr-defined]
    encoding = _content_encoding(request)
    try:
        async with asyncio.timeout(settings.body_timeout_s):
            if encoding is None or request.content.total_compressed_bytes is not None:
                return await request.read()  # aiohttp answers 413 past client_max_size
            return await _decoded(request.content, encoding, settings.max_body_bytes)
    except (errors.BodyUnreadable, TimeoutError, ConnectionResetError,
            aiohttp.http_exceptions.HttpProcessingError, RequestPayloadError) as exc:
        _stop_reading(request)
        raise _unread(request, exc, settings.body_timeout_s) from None


def stop_reading(request: web.Request) -> None:
    """Read no more of this request's body; the connection closes after the answer (see ``_stop_reading``)."""
    _stop_reading(request)


async def streamed(request: web.Request, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """A streamed body's chunks (an upload), each within BODY_TIMEOUT_S of the one before.

    Not capped by MAX_BODY_BYTES (the caller caps it), and BODY_TIMEOUT_S bounds each pause, not
    the whole transfer: a 1 GiB upload takes longer than 30 s on most links. A stalled, broken or
    abandoned body raises the same errors as :func:`read_body` and closes the connection.
    """
    timeout_s = request.app[SERVICES].settings.body_timeout_s  # type: ignore[attr-defined]
    while True:
        try:
            async with asyncio.timeout(timeout_s):
                chunk = await anext(chunks, None)
        except (TimeoutError, ConnectionResetError, aiohttp.http_exceptions.HttpProcessingError,
                RequestPayloadError) as exc:
            _stop_reading(request)
            raise _unread(request, exc, timeout_s) from None
        if chunk is None:
            return
        yield chunk


def unreadable(request: web.Request, exc: Exception) -> errors.GraphRuntimeError:
    """Why a body being streamed (a multipart execute) could not be read; reads nothing more from the connection."""
    _stop_reading(request)
    return _unread(request, exc, request.app[SERVICES].settings.body_timeout_s)  # type: ignore[attr-defined]


def _unread(request: web.Request, exc: Exception, timeout_s: float) -> errors.GraphRuntimeError:
    """Why the body could not be read, as the error to answer (every one closes the connection)."""
    if isinstance(exc, errors.BodyUnreadable):
        return exc
    if isinstance(exc, TimeoutError):
        return errors.BodyTimeout(f"the request body did not arrive within {timeout_s:g} s "
                                  "(GRAPH_RUNTIME_BODY_TIMEOUT_S)")
    if isinstance(exc, ConnectionResetError) or request.transport is None or request.transport.is_closing():
        return errors.ClientDisconnected()  # aiohttp's ClientConnectionResetError is a ConnectionResetError
    return errors.BodyUnreadable(f"the body could not be read: {str(exc).strip()}")


async def json_object(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object; an empty body is ``{}``."""
    raw = await read_body(request)
    if not raw.strip():
        return {}
    ctype = request.content_type
    json_like = ctype in JSON_TYPES or ctype.endswith("+json")
    if not json_like and ctype != CURL_DEFAULT:
        raise errors.UnsupportedMediaType(f"Content-Type {ctype!r} is not JSON; send application/json")
    try:
        data = codec.loads(raw)
    except codec.DecodeError as exc:
        if not json_like:
            raise errors.UnsupportedMediaType(f"Content-Type {ctype!r} is not JSON; send application/json") from None
        raise errors.BodyNotJson(f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise errors.BodyNotObject(f"the body must be a JSON object, not {type(data).__name__}")
    if too_deep(data):
        raise errors.RequestInvalid(f"the body nests deeper than {MAX_JSON_DEPTH} levels")
    return data


async def json_or_yaml_object(request: web.Request) -> dict[str, Any]:
    """The body as an object: YAML for a YAML Content-Type (``yaml_body.YAML_TYPES``), else as :func:`json_object`.

    YAML is bounded like JSON (MAX_BODY_BYTES, depth) and by how far its aliases expand, and is
    parsed off the event loop: PyYAML's pure-Python loader takes seconds per MiB (9 s for 1.2 MiB
    measured on a shared 2-CPU box; the endpoint is admin-only).
    """
    if request.content_type not in yaml_body.YAML_TYPES:
        return await json_object(request)
    raw = await read_body(request)
    if not raw.strip():
        return {}
    max_values = request.app[SERVICES].settings.max_body_bytes  # type: ignore[attr-defined]
    return await asyncio.to_thread(yaml_body.load_object, raw, max_depth=MAX_JSON_DEPTH, max_values=max_values)


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=codec.dumps(data), status=status, content_type="application/json", headers=headers)


def int_query(request: web.Request, name: str, *, low: int, high: int, default: int | None = None) -> int | None:
    value = request.query.get(name)
    if value is None or value == "":
        return default
    if not _DIGITS.fullmatch(value):
        raise errors.RequestInvalid(f"{name} must be a whole number, got {value!r}", field=name)
    number = int(value)
    if not low <= number <= high:
        raise errors.RequestInvalid(f"{name} must be between {low} and {high}, got {number}", field=name)
    return number


def path_int(request: web.Request, name: str, not_found: type[Exception]) -> int:
    """A numeric id from the path; anything else is simply unknown (404)."""
    value = request.match_info[name]
    if not _DIGITS.fullmatch(value):
        raise not_found(f"no {name.replace('_', ' ')} {value!r}")
    return int(value)
