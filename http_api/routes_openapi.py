"""``GET /api/v1/openapi.json``: the OpenAPI 3.1 document, public like ``/healthz``."""

from __future__ import annotations

from aiohttp import web

from http_api import openapi
from http_api.auth import public
from http_api.body import json_response

routes = web.RouteTableDef()


@routes.get(openapi.OPENAPI_PATH)
@public
async def openapi_document(request: web.Request) -> web.Response:
    """The document of every endpoint, built from the request and response models."""
    return json_response(openapi.document())
