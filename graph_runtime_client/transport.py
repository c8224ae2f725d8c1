"""HTTP to one server: the key on every request, JSON in and out, typed errors, and bounded
retries of 503 and 429 that honour ``Retry-After`` (the server wrote nothing for either)."""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import time
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp

from graph_runtime_client import errors

RETRY_STATUSES = frozenset({429, 503})
BodyFactory = Callable[[], Any]
"""Makes a fresh request body per attempt (an open file cannot be sent twice)."""


class Transport:
    """One aiohttp session (made on first use, inside the running loop) for one server and key.

    Args:
        url: the server's base URL, e.g. ``http://127.0.0.1:8080``.
        key: a server key's token (what ``graph-runtime serve`` or ``keys create`` printed).
        retries: how many times a 503 or 429 is retried before it is raised.
        max_retry_wait: the longest wait between two tries, whatever ``Retry-After`` says (seconds).
        timeout: seconds for a whole JSON request; long-polls add their own wait to it.
    """

    def __init__(self, url: str, key: str, *, retries: int = 5, max_retry_wait: float = 30.0,
                 timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.retries = retries
        self.max_retry_wait = max_retry_wait
        self.timeout = timeout
        self._auth = {"Authorization": f"Basic {key}"}
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(headers=self._auth)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def json(self, method: str, path: str, *, params: Mapping[str, Any] | None = None, body: Any = None,
                   data: BodyFactory | None = None, headers: Mapping[str, str] | None = None,
                   extra_timeout: float = 0.0) -> Any:
        """The parsed JSON answer of a 2xx; any other answer raises its typed error."""
        if body is not None:
            encoded = json.dumps(body).encode()
            headers = {"Content-Type": "application/json", **(headers or {})}
            data = lambda: encoded  # noqa: E731  (the same bytes on every attempt)
        timeout = aiohttp.ClientTimeout(total=self.timeout + extra_timeout)
        response = await self.open(method, path, params=params, data=data, headers=headers, timeout=timeout)
        async with response:
            return await response.json(content_type=None) if response.status != 204 else None

    async def open(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
                   data: BodyFactory | None = None, headers: Mapping[str, str] | None = None,
                   timeout: aiohttp.ClientTimeout | None = None) -> aiohttp.ClientResponse:
        """The response of the first try that is not a 503/429 (the caller releases it), or its typed error."""
        query = {k: str(v) for k, v in (params or {}).items() if v is not None}
        for attempt in range(self.retries + 1):
            response = await self.session().request(method, self.url + path, params=query, headers=headers,
                                                    data=data() if data else None, timeout=timeout)
            if response.status < 400:
                return response
            async with response:
                body = await _error_body(response)
                if response.status not in RETRY_STATUSES or attempt == self.retries:
                    raise errors.from_response(response.status, body)
                delay = self.retry_delay(response.headers.get("Retry-After"), attempt)
            await asyncio.sleep(delay)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def retry_delay(self, retry_after: str | None, attempt: int) -> float:
        """``Retry-After`` (seconds or an HTTP date), else 0.5 s doubling; never over ``max_retry_wait``."""
        delay = 0.5 * 2**attempt
        if retry_after:
            try:
                delay = float(retry_after)
            except ValueError:
                with contextlib.suppress(TypeError, ValueError):  # unreadable: keep the doubling delay
                    delay = email.utils.parsedate_to_datetime(retry_after).timestamp() - time.time()
        return min(max(delay, 0.0), self.max_retry_wait)


async def _error_body(response: aiohttp.ClientResponse) -> Any:
    text = await response.text(errors="replace")
    try:
        return json.loads(text)
    except ValueError:
        return text
