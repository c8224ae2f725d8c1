"""The ``file.fetch`` node type, and the helpers HTTP nodes use to read and store files."""

from __future__ import annotations

import mimetypes
from email.message import Message
from typing import ClassVar

import aiohttp
from multidict import CIMultiDict
from pydantic import BaseModel, ConfigDict, Field
from yarl import URL

from nodes import errors
from nodes.builtin import http_body, http_client
from nodes.contract import CostModel, NodeType, RunContext, RunPolicy
from nodes.files import File, FileNotFound, FileStore

DEFAULT_NAME = "file"


class FileFetchParams(BaseModel):
    """Parameters of ``file.fetch``."""

    model_config = ConfigDict(extra="forbid")

    url: http_client.HttpUrl = Field(description="Absolute http:// or https:// URL of the file.")
    max_bytes: int | None = Field(
        None, ge=1, description="Largest file accepted; null means the server's MAX_FILE_BYTES, "
        "which also caps a larger value.")



class FileFetchOutput(BaseModel):
    """What ``file.fetch`` returns."""

    file: File = Field(description="The downloaded file, stored in the file store.")


class FileFetch(NodeType):
    """Downloads a URL into the file store."""

    type = "file.fetch"
    description = (
        "Downloads a URL (redirects followed, every host SSRF-checked) and streams it into the "
        "file store, up to max_bytes (at most MAX_FILE_BYTES). The name comes from "
        "Content-Disposition or the URL's path, the content type from the response."
    )
    Params = FileFetchParams
    Output = FileFetchOutput
    cost: ClassVar[CostModel] = CostModel(per_run=0.001)
    policy: ClassVar[RunPolicy] = RunPolicy(timeout_s=300, retries=2, retry_backoff_s=1)

    async def run(self, params: FileFetchParams, ctx: RunContext) -> FileFetchOutput:
        """GET the URL and store its body; a non-2xx answer fails the node.

        Raises:
            errors.HttpStatusError: the answer is not 2xx (5xx and 429 are retried).
            errors.OutputTooLarge, errors.NodeFailed: the body is larger than the limit.
            errors.StorageFull: the store is full; nothing was kept.
            errors.SsrfBlocked, errors.ConnectionFailed, errors.NodeTimeout: as ``http_request``.
        """
        request = http_client.Request("GET", URL(params.url), CIMultiDict({"Accept-Encoding": http_body.ACCEPT_ENCODING}))
        async with http_client.session_for(ctx) as session, \
                http_client.open_final(session, request, ctx) as resp:
            shown = http_client.shown_url(resp.url)
            if not 200 <= resp.status < 300:
                snippet = (await http_body.read(resp, 4096, shown)).decode("utf-8", "replace")[:200]
                raise errors.HttpStatusError(f"GET {shown} answered {resp.status}: {snippet}", status=resp.status)
            return FileFetchOutput(file=await store_response(resp, ctx, shown, params.max_bytes))


def store_of(ctx: RunContext) -> FileStore:
    """``ctx.files``, or a clear failure where the runtime was given no file store."""
    if ctx.files is None:
        raise errors.NodeFailed("no file store is configured for this run (FILES_DIR)")
    return ctx.files


async def stored(ctx: RunContext, file: File, field: str) -> File:
    """``file`` as the store knows it (a bare ``{"$file": id}`` gets its name, type and size).

    Raises:
        errors.InvalidParams: no such file, naming ``field``.
    """
    try:
        return await store_of(ctx).get(file.id)
    except FileNotFound:
        raise errors.InvalidParams(f"{field}: no file has id {file.id!r}", field=field) from None


async def store_response(resp: aiohttp.ClientResponse, ctx: RunContext, shown: str,
                         max_bytes: int | None = None) -> File:
    """Stream ``resp``'s (decoded) body into the store as a new file.

    Raises:
        errors.OutputTooLarge, errors.NodeFailed: more than ``max_bytes`` (or MAX_FILE_BYTES).
        errors.StorageFull: the store is full; nothing was kept.
    """
    store = store_of(ctx)
    name = file_name(resp)
    content_type = resp.headers.get("Content-Type") or mimetypes.guess_type(name)[0] or "application/octet-stream"
    # The store enforces MAX_FILE_BYTES itself; the decoder needs a bound of its own too.
    bound = max_bytes if max_bytes is not None else 1 << 62
    chunks = http_body.chunks(resp, bound, shown)
    return await store.put(chunks, name=name, content_type=content_type, max_bytes=max_bytes)


def file_name(resp: aiohttp.ClientResponse) -> str:
    """A download name: Content-Disposition's filename, else the URL path's last segment."""
    name = None
    disposition = resp.headers.get("Content-Disposition")
    if disposition:
        message = Message()
        message["Content-Disposition"] = disposition
        name = message.get_filename()
    return _safe(name or resp.url.name) or DEFAULT_NAME


def _safe(name: str) -> str:
    # A name from the network is shown and used in downloads: no paths, no control characters.
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    return "".join(c for c in name if c.isprintable())[:255].strip()
