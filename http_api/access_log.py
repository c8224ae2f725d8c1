"""An access log that never writes a server key: ``execution-key`` query values are masked."""

from __future__ import annotations

import re

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

_KEY_IN_QUERY = re.compile(r"(execution-key=)[^&\s]*", re.IGNORECASE)


def mask(path_qs: str) -> str:
    return _KEY_IN_QUERY.sub(r"\1***", path_qs)


class MaskingAccessLogger(AbstractAccessLogger):
    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            '%s "%s %s" %s %.6fs', request.remote, request.method, mask(request.path_qs), response.status, time,
            extra={"action": "http_request", "status": response.status},
        )
