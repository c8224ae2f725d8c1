"""Reading request bodies and query values, with the SPEC's 400/413/415/422 answers."""

from __future__ import annotations

import re
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from http_api import errors
from nodes import codec

SERVICES = web.AppKey("services", object)
JSON_TYPES = ("application/json", "application/octet-stream", "text/plain")
# `curl -d '{...}'` without -H sends this type; a pasted snippet that forgot the header still works
# when the body is JSON, and real form data is still refused with 415.
CURL_DEFAULT = "application/x-www-form-urlencoded"


MAX_JSON_DEPTH = 64
_DIGITS = re.compile(r"[0-9]{1,18}")


def _too_deep(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
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


async def json_object(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object; an empty body is ``{}``."""
    try:
        raw = await request.read()
    except web.HTTPException:
        raise
    except (aiohttp.http_exceptions.HttpProcessingError, RequestPayloadError) as exc:
        # The connection's framing is lost: answer 400 and close it (see BodyUnreadable) instead of
        # letting aiohttp re-read the broken payload, which logs an error and stalls the next request.
        request.content.feed_eof()
        raise errors.BodyUnreadable(f"the body could not be read: {str(exc).strip()}") from None
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
    if _too_deep(data):
        raise errors.RequestInvalid(f"the body nests deeper than {MAX_JSON_DEPTH} levels")
    return data


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
