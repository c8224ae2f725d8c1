"""Execute with files in one request (SPEC §7): a ``multipart/form-data`` execute body.

The part named ``body`` (or ``json``) holds the JSON execute body; every other part is a file,
named by the settings path it fills::

    curl -u "$KEY_ID:$SECRET" -F 'body={"start_node_id": "in"}' \\
         -F 'node_settings.in.data.image=@cat.jpg' http://127.0.0.1:8080/api/v1/flow/f/execute

Each file part is streamed to the file store (at most MAX_FILE_BYTES) and its file value set at
its path, creating the objects on the way. A file uploaded by a request that is then refused is
not used by any task: the retention sweep deletes it within a day.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import BodyPartReader, web
from aiohttp.web_protocol import RequestPayloadError

from http_api import body as bodies
from http_api import errors
from http_api.routes_files import FileTooLarge
from nodes import codec
from nodes import errors as node_errors
from nodes.files import FILE_KEY, File, FileStore, is_file_value

BODY_PARTS = ("body", "json")
SETTINGS_PREFIX = "node_settings."
MAX_FILE_PARTS = 64
CHUNK_BYTES = 256 * 1024


@dataclass
class ExecuteForm:
    """A multipart execute body as it is read: the JSON body and the files to set into it."""

    body: dict[str, Any] | None = None
    files: list[tuple[str, File]] = field(default_factory=list)


def is_form(request: web.Request) -> bool:
    """Whether the execute request is ``multipart/form-data`` (files with the body)."""
    return request.content_type == "multipart/form-data"


async def read_form(request: web.Request, store: FileStore, *, max_file_bytes: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The execute body with each file part's value at its path, and what idempotency compares.

    Idempotency compares the body with each file as its sha256 (a new upload of the same bytes
    gets a new id: the same request sent twice must still be the same).

    Raises:
        errors.RequestInvalid: a part's name is no settings path, or its path cannot hold a file.
        errors.BodyTooLarge: the JSON part is over MAX_BODY_BYTES, or a file over MAX_FILE_BYTES.
    """
    settings = request.app[bodies.SERVICES].settings  # type: ignore[attr-defined]
    if request.headers.get("Content-Encoding", "identity").strip().lower() not in ("", "identity"):
        raise errors.UnsupportedEncoding("send a multipart execute without Content-Encoding", field="Content-Encoding")
    form = ExecuteForm()
    try:
        reader = await request.multipart()
        while (part := await _next_part(reader, settings.body_timeout_s)) is not None:
            await _read_part(request, part, form, store, max_file_bytes)
    except (TimeoutError, ConnectionResetError, aiohttp.http_exceptions.HttpProcessingError,
            RequestPayloadError, ValueError) as exc:  # aiohttp's multipart reader raises ValueError on bad framing
        raise bodies.unreadable(request, exc) from None
    printed = _for_idempotency(form)
    body = form.body or {}
    for path, file in form.files:
        _set(body, path, file.as_value())
    return body, printed


async def _next_part(reader: aiohttp.MultipartReader, timeout_s: float) -> BodyPartReader | None:
    async with asyncio.timeout(timeout_s):
        part = await reader.next()
    if part is not None and not isinstance(part, BodyPartReader):
        raise errors.RequestInvalid("nested multipart parts are not accepted", field=part.headers.get("Content-Type"))
    return part


async def _read_part(request: web.Request, part: BodyPartReader, form: ExecuteForm, store: FileStore,
                     max_file_bytes: int) -> None:
    """Read one part: the JSON body, or a file streamed to the store (each pause within BODY_TIMEOUT_S)."""
    name = part.name or ""
    chunks = bodies.streamed(request, _part_chunks(part))
    if name in BODY_PARTS:
        if form.body is not None:
            raise errors.RequestInvalid("give the JSON body once, in a part named body (or json)", field=name)
        limit = request.app[bodies.SERVICES].settings.max_body_bytes  # type: ignore[attr-defined]
        form.body = _json_body(await _small(chunks, limit, name))
        for path, _file in form.files:
            _set(_copy(form.body), path, None)  # a path the body cannot hold fails before more is read
        return
    path = _settings_path(name)
    if len(form.files) >= MAX_FILE_PARTS:
        raise errors.RequestInvalid(f"at most {MAX_FILE_PARTS} file parts per execute", field=name)
    if form.body is not None:
        _set(_copy(form.body), path, None)  # a path the body cannot hold fails before its bytes are stored
    file_name = part.filename or path.rsplit(".", 1)[-1]
    content_type = part.headers.get(aiohttp.hdrs.CONTENT_TYPE) or "application/octet-stream"
    try:
        stored = await store.put(chunks, name=file_name[:255],
                                 content_type=content_type, max_bytes=max_file_bytes)
    except node_errors.OutputTooLarge:
        raise FileTooLarge(f"file part {name!r} is larger than the server accepts ({max_file_bytes} bytes; "
                           "see GRAPH_RUNTIME_MAX_FILE_BYTES); nothing was kept", field=name) from None
    form.files.append((path, stored))


def _settings_path(name: str) -> str:
    """The dotted path a file part fills: ``node_settings.<node>.<key>[.<key>…]``."""
    keys = name.split(".")
    if not name.startswith(SETTINGS_PREFIX) or len(keys) < 3 or not all(keys):
        raise errors.RequestInvalid(
            f"part {name[:200]!r}: name a file part by the setting it fills, e.g. node_settings.<node>.data.image "
            f"(the JSON body goes in a part named body)", field=name[:200] or None)
    return name


async def _small(chunks: AsyncIterator[bytes], limit: int, name: str) -> bytes:
    """A part's bytes, refused past ``limit``."""
    data = bytearray()
    async for chunk in chunks:
        data += chunk
        if len(data) > limit:
            raise errors.BodyTooLarge(f"the JSON body part is larger than the server accepts ({limit} bytes; "
                                      "see GRAPH_RUNTIME_MAX_BODY_BYTES)", field=name)
    return bytes(data)


async def _part_chunks(part: BodyPartReader) -> AsyncIterator[bytes]:
    while chunk := await part.read_chunk(CHUNK_BYTES):
        yield chunk


def _json_body(raw: bytes) -> dict[str, Any]:
    if not raw.strip():
        return {}
    try:
        data = codec.loads(raw)
    except codec.DecodeError as exc:
        raise errors.BodyNotJson(f"the body part is not valid JSON: {exc}", field="body") from None
    if not isinstance(data, dict):
        raise errors.BodyNotObject(f"the body part must be a JSON object, not {type(data).__name__}", field="body")
    if bodies.too_deep(data):
        raise errors.RequestInvalid(f"the body nests deeper than {bodies.MAX_JSON_DEPTH} levels", field="body")
    return data


def _set(body: dict[str, Any], path: str, value: Any) -> None:
    """Put ``value`` at the dotted ``path`` of ``body``, making objects on the way; an existing list
    takes an index (its length appends). A path through a non-object, or to a setting the body
    already gives, is a 422 naming the path."""
    container: Any = body
    keys = path.split(".")
    for depth, name in enumerate(keys):
        key: str | int = name
        if isinstance(container, list) and name.isdigit() and int(name) <= len(container):
            key = int(name)
            if key == len(container):
                container.append(None)
        elif not isinstance(container, dict) or is_file_value(container):
            raise errors.RequestInvalid(f"{path}: {'.'.join(keys[:depth])} is not an object, so it cannot hold "
                                        f"{name!r}", field=path)
        elif name not in container:
            container[name] = None if depth == len(keys) - 1 else {}
        if depth < len(keys) - 1:
            container = container[key]
        elif container[key] is not None:
            raise errors.RequestInvalid(f"{path} is given twice (in the body, or by two parts)", field=path)
        else:
            container[key] = value


def _copy(body: dict[str, Any]) -> dict[str, Any]:
    return codec.loads(codec.dumps(body))  # type: ignore[no-any-return]


def _for_idempotency(form: ExecuteForm) -> dict[str, Any]:
    body = _copy(form.body or {})
    for path, file in form.files:
        _set(body, path, {**file.as_value(), FILE_KEY: f"sha256:{file.sha256}"})
    return body
