"""Files in a node's parameters, made complete before it runs (SPEC §7 "Files").

Wherever a parameter takes files (:mod:`nodes.file_params`), a request may give a file value
(``{"$file": id}`` is enough) or an ``http(s)`` URL. :class:`FileResolver` turns the first into
the complete file value from the store and fetches the second into the store, through the
process's guarded HTTP session (the SSRF policy of ``http_request``) and capped at
MAX_FILE_BYTES. :func:`check_request_files` refuses unknown ids at execute time, before
anything is queued.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from graph_runtime.models import Task
from graph_runtime.resolve import Resolved
from http_api.errors import RequestInvalid
from nodes import errors, file_params
from nodes.builtin import file_fetch, http_body, http_client
from nodes.contract import NodeType, RunContext
from nodes.files import FILE_KEY, File, FileNotFound, FileStore, is_file_value

FETCH_TIMEOUT_S = 300.0
"""A fetch runs before the node's first try, outside its timeout_s: a silent server must still not
hold the node forever (``file.fetch``'s default timeout)."""


class FileRefNotFound(RequestInvalid):
    """A file value names a file the store does not have."""

    code = "file_not_found"


@dataclass(frozen=True)
class FileResolver:
    """A :class:`graph_runtime.resolve.ParamResolver` for file parameters.

    Attributes:
        store: where files live.
        http: the process's guarded client session (its resolver refuses non-public addresses).
        allow_private: HTTP_ALLOW_PRIVATE: IP-literal hosts that are not public are allowed too.
        max_bytes: MAX_FILE_BYTES, the most a fetched URL may bring.
    """

    store: FileStore
    http: aiohttp.ClientSession
    allow_private: bool
    max_bytes: int

    async def resolve(self, task: Task, node_id: str, node_type: type[NodeType], params: dict[str, Any]) -> Resolved:
        """``params`` with every file slot a complete file value.

        Raises:
            nodes.errors.InvalidParams: a file id the store does not have (``field`` names the slot).
            nodes.errors.SsrfBlocked: a URL's host is not public.
            nodes.errors.ConnectionFailed, nodes.errors.HttpStatusError, nodes.errors.NodeFailed:
                the URL could not be fetched (or was larger than MAX_FILE_BYTES).
        """
        shapes = file_params.file_params(node_type.Params)
        if not shapes:
            return Resolved(params)
        new: dict[str, Any] = {}
        for path, value in file_params.slots(params, shapes):
            if is_file_value(value):
                new[path] = (await self._stored(path, value)).as_value()
            elif file_params.is_url(value):
                new[path] = (await self.fetch(value, task, node_id)).as_value()
        return Resolved(file_params.replace_slots(params, shapes, new) if new else params)

    async def _stored(self, path: str, value: Mapping[str, Any]) -> File:
        try:
            return await self.store.get(str(value[FILE_KEY]))
        except FileNotFound:
            raise errors.InvalidParams(f"{path}: no file {value[FILE_KEY]!r}", field=path) from None

    async def fetch(self, url: str, task: Task, node_id: str) -> File:
        """Store the body at ``url`` as a new file, as ``file.fetch`` would (redirects followed and
        each hop checked, gzip/deflate decoded within the cap, the name from Content-Disposition or
        the URL's path)."""
        ctx = RunContext(task_id=task.id, node_id=node_id, flow_id=task.flow_id, timeout_s=FETCH_TIMEOUT_S,
                         http=self.http, allow_private=self.allow_private, files=self.store)
        request = http_client.Request("GET", URL(url), CIMultiDict({"Accept-Encoding": http_body.ACCEPT_ENCODING}))
        async with http_client.open_final(self.http, request, ctx) as resp:
            shown = http_client.shown_url(resp.url)
            if not 200 <= resp.status < 300:
                raise errors.HttpStatusError(f"fetching {shown}: the server answered {resp.status}", status=resp.status)
            return await file_fetch.store_response(resp, ctx, shown, self.max_bytes)


async def check_request_files(store: FileStore, node_settings: Mapping[str, Any]) -> list[File]:
    """Every file a request's ``node_settings`` names, from the store.

    Raises:
        FileRefNotFound: (422) one is not there; ``field`` is ``node_settings.<node>.<path>``.
    """
    found = []
    for node_id, settings in node_settings.items():
        for path, value in _file_paths(settings, f"node_settings.{node_id}"):
            try:
                found.append(await store.get(str(value[FILE_KEY])))
            except FileNotFound:
                raise FileRefNotFound(f"{path}: no file {value[FILE_KEY]!r}; upload it first (POST /api/v1/files)",
                                      field=path) from None
    return found


def _file_paths(value: Any, path: str) -> list[tuple[str, dict[str, Any]]]:
    """``(dotted path, file value)`` of every file value inside ``value``, depth-first in key order."""
    if is_file_value(value):
        return [(path, value)]
    if isinstance(value, dict):
        return [found for key, child in value.items() for found in _file_paths(child, f"{path}.{key}")]
    if isinstance(value, list):
        return [found for i, child in enumerate(value) for found in _file_paths(child, f"{path}.{i}")]
    return []


