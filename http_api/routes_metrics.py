"""``GET /metrics``: Prometheus text format, on the API port; any key, or none with METRICS_PUBLIC=true."""

from __future__ import annotations

from aiohttp import web

from http_api import metrics
from http_api.auth import public
from http_api.telemetry import Telemetry

PATH = "/metrics"
TELEMETRY = web.AppKey("telemetry", Telemetry)


async def scrape(request: web.Request) -> web.Response:
    """Every metric of this process, with the database gauges read now."""
    body = await request.app[TELEMETRY].scrape()
    return web.Response(body=body, headers={"Content-Type": metrics.CONTENT_TYPE})


def add_route(app: web.Application, telemetry: Telemetry, *, open_to_all: bool) -> None:
    """Serve ``telemetry`` at ``/metrics``, behind the auth middleware unless ``open_to_all``."""
    async def handler(request: web.Request) -> web.Response:  # one per app: `public` marks the function
        return await scrape(request)

    app[TELEMETRY] = telemetry
    app.router.add_get(PATH, public(handler) if open_to_all else handler)
