"""Server keys: create (token shown once), list (no secrets), revoke. Admin only."""

from __future__ import annotations

from aiohttp import web

from http_api.auth import KeyChecker, issue_key, requires
from http_api.body import SERVICES, json_object, json_response
from http_api.schemas import KeyCreateBody, parse_body
from http_api.services import Services
from http_api.views import key_view

routes = web.RouteTableDef()
KEY_CHECKER = web.AppKey("key_checker", KeyChecker)


@routes.post("/api/v1/keys")
@requires("admin")
async def create_key(request: web.Request) -> web.Response:
    body = parse_body(KeyCreateBody, await json_object(request))
    services: Services = request.app[SERVICES]  # type: ignore[assignment]
    record, token = await issue_key(services.repo, body.name, body.scope)
    return json_response({**key_view(record), "key": token}, status=201)


@routes.get("/api/v1/keys")
@requires("admin")
async def list_keys(request: web.Request) -> web.Response:
    services: Services = request.app[SERVICES]  # type: ignore[assignment]
    return json_response({"keys": [key_view(k) for k in await services.repo.list_keys()]})


@routes.delete("/api/v1/keys/{key_id}")
@requires("admin")
async def revoke_key(request: web.Request) -> web.Response:
    services: Services = request.app[SERVICES]  # type: ignore[assignment]
    record = await services.repo.revoke_key(request.match_info["key_id"])
    request.app[KEY_CHECKER].forget(record.id)
    return json_response(key_view(record))
