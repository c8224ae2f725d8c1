"""Reading request bodies and query values, with the SPEC's 400/413/415/422 answers."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from http_api import errors
from nodes import codec

SERVICES = web.AppKey("services", object)
JSON_TYPES = ("application/json", "application/octet-stream", "text/plain")
# `curl -d '{...}'` without -H sends this type; a pasted snippet that forgot the header still works
# when the body is JSON, and real form data is still refused with 415.
CURL_DEFAULT = "application/x-www-form-urlencoded"


async def json_object(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object; an empty body is ``{}``."""
    raw = await request.read()
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
    return data


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=codec.dumps(data), status=status, content_type="application/json", headers=headers)


def int_query(request: web.Request, name: str, *, low: int, high: int, default: int | None = None) -> int | None:
    value = request.query.get(name)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise errors.RequestInvalid(f"{name} must be a whole number, got {value!r}", field=name) from None
    if not low <= number <= high:
        raise errors.RequestInvalid(f"{name} must be between {low} and {high}, got {number}", field=name)
    return number


def path_int(request: web.Request, name: str, not_found: type[Exception]) -> int:
    """A numeric id from the path; anything else is simply unknown (404)."""
    value = request.match_info[name]
    if not value.isdigit() or len(value) > 18:
        raise not_found(f"no {name.replace('_', ' ')} {value!r}")
    return int(value)
