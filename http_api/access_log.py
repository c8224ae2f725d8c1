"""An access log that never writes a server key: ``execution-key`` query values are masked."""

from __future__ import annotations

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from http_api.redaction import redact

SECRET_PARAMS = ("execution-key",)


def mask(request: web.BaseRequest) -> str:
    """The path and query with secret values (and a webhook's key) replaced, judged on the decoded parameter names."""
    url = request.rel_url
    if not any(name.lower() in SECRET_PARAMS for name in url.query):
        return redact(url.path_qs if not url.raw_query_string else f"{url.raw_path}?{url.raw_query_string}")
    query = [(name, "***" if name.lower() in SECRET_PARAMS else value) for name, value in url.query.items()]
    return redact(str(url.with_query(query)))


class MaskingAccessLogger(AbstractAccessLogger):
    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            '%s "%s %s" %s %.6fs', request.remote, request.method, mask(request), response.status, time,
            extra={"action": "http_request", "status": response.status},
        )
