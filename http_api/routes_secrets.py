"""Secrets: set a value (per mode), list names and modes (never a value), delete. Admin only.

A value goes in once and never comes back out of the API: nodes get it, resolved from a flow's
``{"$secret": NAME}`` just before they run (``http_api.secret_resolver``).
"""

from __future__ import annotations

from aiohttp import web

from http_api import errors
from http_api.auth import requires
from http_api.body import SERVICES, json_object, json_response
from http_api.schemas import SecretPutBody, parse_body
from http_api.services import Services
from http_api.views import secret_view
from storage.secrets import MODES, NAME_PATTERN, Mode, SecretNotFound

routes = web.RouteTableDef()


def _services(request: web.Request) -> Services:
    return request.app[SERVICES]  # type: ignore[return-value]


def _mode(request: web.Request) -> Mode | None:
    """``?mode=dev|prod``; absent or empty: None."""
    value = request.query.get("mode") or None
    if value is not None and value not in MODES:
        raise errors.RequestInvalid(f"mode must be one of {', '.join(MODES)}", field="mode")
    return value  # type: ignore[return-value]


@routes.put("/api/v1/secrets/{name}")
@requires("admin")
async def put_secret(request: web.Request) -> web.Response:
    """Store the secret's value for ``?mode=`` (default prod), replacing any; 204."""
    name = request.match_info["name"]
    if not NAME_PATTERN.fullmatch(name):
        raise errors.RequestInvalid("name: a secret's name is 1 to 64 letters, digits or underscores", field="name")
    mode = _mode(request) or "prod"
    body = parse_body(SecretPutBody, await json_object(request))
    services = _services(request)
    await services.repo.put_secret(services.cipher, name, mode, body.value)
    return web.Response(status=204)


@routes.get("/api/v1/secrets")
@requires("admin")
async def list_secrets(request: web.Request) -> web.Response:
    """``{"secrets": [{name, modes, created, updated}]}``, by name; no value."""
    return json_response({"secrets": [secret_view(s) for s in await _services(request).repo.list_secrets()]})


@routes.delete("/api/v1/secrets/{name}")
@requires("admin")
async def delete_secret(request: web.Request) -> web.Response:
    """Delete every value of the secret (only ``?mode=``'s when given); 204, or 404 if there was none."""
    name = request.match_info["name"]
    mode = _mode(request)
    if not NAME_PATTERN.fullmatch(name):  # no secret can have this name
        raise SecretNotFound(f"no secret is named {name!r}")
    await _services(request).repo.delete_secret(name, mode)
    return web.Response(status=204)
