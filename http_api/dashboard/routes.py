"""Serve the dashboard: ``/ui/`` is one HTML page, ``/ui/static/...`` its committed assets.

The pages are plain ES modules and CSS written by hand, plus dagre (vendored from the npm
registry with its licence) for the graph layout: nothing is built at install time and the page
asks no host but this server for anything (its Content-Security-Policy says so to the browser).
The assets need no key; the page holds the key the user signs in with and sends it to /api/v1.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from http_api.auth import public

STATIC = (Path(__file__).parent / "static").resolve()

# 'self' only: a page that could load a script or send data to another host would be one
# injected string away from leaking the key. blob: lets an uploaded file be previewed before it is sent.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
       "media-src 'self' blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
       "form-action 'self'; frame-ancestors 'none'")
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Revalidated each load (ETag/Last-Modified): an upgraded server never runs yesterday's script.
    "Cache-Control": "no-cache",
}
TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html", ".svg": "image/svg+xml",
         ".txt": "text/plain"}

routes = web.RouteTableDef()


@routes.get("/ui")
@public
async def to_index(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("/ui/")


@routes.get("/ui/")
@public
async def index(request: web.Request) -> web.StreamResponse:
    return _file(STATIC / "index.html")


@routes.get("/ui/static/{path:.+}")
@public
async def asset(request: web.Request) -> web.StreamResponse:
    path = (STATIC / request.match_info["path"]).resolve()
    # Only files inside the static folder, by a known type: no '..' walk, no listing.
    if not path.is_relative_to(STATIC) or not path.is_file() or path.suffix not in TYPES:
        raise web.HTTPNotFound()
    return _file(path)


def _file(path: Path) -> web.FileResponse:
    response = web.FileResponse(path, headers=HEADERS)
    response.content_type = TYPES[path.suffix]
    return response
