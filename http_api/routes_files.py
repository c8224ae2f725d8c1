"""The files API (SPEC §7): upload (streamed), download (ranges, ETag, signed links), delete."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from aiohttp import BodyPartReader, MultipartReader, hdrs, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from graph_runtime import errors as flow_errors
from http_api import auth, body, errors, http_ranges
from http_api.services import Services
from nodes.errors import OutputTooLarge, StorageFull
from nodes.files import File

log = logging.getLogger(__name__)
routes = web.RouteTableDef()

CHUNK = 1024 * 1024
DISCARD_BYTES = 4 * 1024 * 1024
DISCARD_S = 2.0
FILE_PART = "file"
MAX_NAME = 255


class FileTooLarge(errors.BodyTooLarge):
    """The file is larger than the server accepts (GRAPH_RUNTIME_MAX_FILE_BYTES); nothing was kept."""

    code = "file_too_large"


class FileMissing(flow_errors.NotFound):
    """No such file (it was deleted, swept by retention, or never existed)."""


class UploadInvalid(errors.RequestInvalid):
    """Send the file as multipart/form-data with a part named ``file``, or as the raw body."""


def _services(request: web.Request) -> Services:
    return request.app[body.SERVICES]  # type: ignore[return-value]


@routes.post("/api/v1/files")
async def upload(request: web.Request) -> web.Response:
    """Store an upload (multipart part ``file``, or the raw body with ``?name=``); 201 with its file value."""
    services = _services(request)
    if not services.accepting:
        raise errors.ShuttingDown()
    limit = services.settings.max_file_bytes
    if (request.content_length or 0) > limit + 64 * 1024:  # room for multipart framing
        body.stop_reading(request)
        raise FileTooLarge(_too_large_message(limit), field=FILE_PART)
    name = _query_name(request)
    if not request.body_exists:
        raise UploadInvalid("the request has no body: send the file (multipart part 'file', or the raw bytes)",
                            field=FILE_PART)
    if request.content_type.startswith("multipart/"):
        file = await _store_multipart(request, services, name)
    else:
        await _refuse_encoding(request)
        file = await _store(request, services, body.streamed(request, request.content.iter_chunked(CHUNK)),
                            name=name or "file", content_type=request.content_type)
    view = services.links.with_url(file.as_value())
    return body.json_response({"file": view}, status=201, headers={"Location": f"/api/v1/files/{file.id}"})


async def _store_multipart(request: web.Request, services: Services, name: str | None) -> File:
    reader = await request.multipart()
    part = await _next_part(request, reader)
    if part is None:
        raise UploadInvalid("the multipart body has no part named 'file'", field=FILE_PART)
    filename = part.filename or name or "file"
    content_type = part.headers.get(hdrs.CONTENT_TYPE, "application/octet-stream")
    file = await _store(request, services, body.streamed(request, _part_chunks(part)),
                        name=name or filename, content_type=content_type)
    try:  # anything after the file is a mistake worth naming
        extra = await _next_part(request, reader)
        if extra is not None:
            await _discard_rest(request)
            raise UploadInvalid("a second part named 'file': send one file per upload", field=FILE_PART)
    except BaseException:
        await services.files.delete(file.id)
        raise
    return file


async def _next_part(request: web.Request, reader: MultipartReader) -> BodyPartReader | None:
    """The next part, which must be the ``file`` part; None at the end."""
    try:
        part = await reader.next()
    except (ValueError, HttpProcessingError) as exc:  # aiohttp's words for a malformed multipart body
        await _discard_rest(request)
        raise UploadInvalid(f"the multipart body is malformed: {exc}", field=FILE_PART) from None
    if part is None:
        return None
    if not isinstance(part, BodyPartReader) or part.name != FILE_PART:
        await _discard_rest(request)
        field = getattr(part, "name", None) or "multipart"
        raise UploadInvalid(f"unexpected part {field!r}: send one part named 'file'", field=field)
    return part


async def _part_chunks(part: BodyPartReader) -> AsyncIterator[bytes]:
    while chunk := await part.read_chunk(CHUNK):
        yield chunk


async def _store(request: web.Request, services: Services, chunks: AsyncIterator[bytes], *,
                 name: str, content_type: str) -> File:
    limit = services.settings.max_file_bytes
    try:
        return await services.files.put(chunks, name=name[:MAX_NAME], content_type=content_type[:MAX_NAME])
    except OutputTooLarge:
        await _discard_rest(request)
        raise FileTooLarge(_too_large_message(limit), field=FILE_PART) from None
    except StorageFull:
        await _discard_rest(request)
        raise


async def _discard_rest(request: web.Request) -> None:
    """Read and drop what is left of a refused body, if little, so the client gets to read our answer.

    A client still sending when we close sees a broken pipe instead of the 413. Past
    :data:`DISCARD_BYTES` or :data:`DISCARD_S` we close after answering, like nginx's lingering close.
    """
    dropped = 0
    try:
        async with asyncio.timeout(DISCARD_S):
            while dropped <= DISCARD_BYTES:
                chunk = await request.content.readany()
                if not chunk:
                    return
                dropped += len(chunk)
    except (TimeoutError, ConnectionResetError, RequestPayloadError):
        pass
    body.stop_reading(request)


def _too_large_message(limit: int) -> str:
    return f"the file is larger than the server accepts ({limit} bytes, GRAPH_RUNTIME_MAX_FILE_BYTES); nothing was kept"


def _query_name(request: web.Request) -> str | None:
    name = request.query.get("name")
    if name is None or name == "":
        return None
    if len(name) > MAX_NAME or any(ord(c) < 32 or c in "/\\" for c in name):
        raise errors.RequestInvalid(f"name must be a file name of at most {MAX_NAME} characters, "
                                    "without slashes or control characters", field="name")
    return name


async def _refuse_encoding(request: web.Request) -> None:
    encoding = request.headers.get(hdrs.CONTENT_ENCODING, "identity").strip().lower()
    if encoding not in ("", "identity"):
        await _discard_rest(request)
        raise errors.UnsupportedEncoding(f"Content-Encoding {encoding[:100]!r}: upload the file's own bytes",
                                         field="Content-Encoding")


@routes.get("/api/v1/files/{file_id}")
@auth.signed_link
async def download(request: web.Request) -> web.StreamResponse:
    """The file's bytes (any key, or a signed link): Range, ETag/If-None-Match, Content-Disposition."""
    services = _services(request)
    file_id = request.match_info["file_id"]
    if "signature" in request.query:
        services.links.check(file_id, request.query.get("expires", ""), request.query["signature"])
    file = await _file(services, file_id)
    headers = http_ranges.file_headers(file)
    if http_ranges.not_modified(request.headers.get(hdrs.IF_NONE_MATCH), file):
        return web.Response(status=304, headers=headers)
    span = http_ranges.requested_range(request, file)
    if span is http_ranges.UNSATISFIABLE:
        response = errors.error_response(416, "range_not_satisfiable", f"the file has {file.size} bytes",
                                         field="Range")
        response.headers[hdrs.CONTENT_RANGE] = f"bytes */{file.size}"
        return response
    return await _send(request, services, file, headers, span)


async def _send(request: web.Request, services: Services, file: File, headers: dict[str, str],
                span: tuple[int, int] | None) -> web.StreamResponse:
    start, end = span if span is not None else (0, file.size)
    chunks = services.files.read(file, start, end)
    try:
        first = await anext(chunks, b"") if end > start and request.method != "HEAD" else b""
    except FileNotFoundError:
        log.warning("file %s has a record but no bytes", file.id, extra={"action": "file_blob_missing"})
        raise FileMissing(f"the bytes of file {file.id!r} are missing from the store") from None
    response = web.StreamResponse(status=206 if span is not None else 200, headers=headers)
    if span is not None:
        response.headers[hdrs.CONTENT_RANGE] = f"bytes {start}-{end - 1}/{file.size}"
    response.content_length = end - start
    try:
        await response.prepare(request)
        if request.method != "HEAD":
            await _write_all(response, first, chunks)
        await response.write_eof()
    except ConnectionResetError:  # the client went away mid-download: nobody to answer
        log.info("download of %s stopped: client disconnected", file.id, extra={"action": "client_disconnected"})
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]
    return response


async def _write_all(response: web.StreamResponse, first: bytes, chunks: AsyncIterator[bytes]) -> None:
    if first:
        await response.write(first)
    async for chunk in chunks:
        await response.write(chunk)


async def _file(services: Services, file_id: str) -> File:
    if len(file_id) > 128:
        raise FileMissing(f"no file {file_id[:40]!r}…")
    file = await services.files.records.get(file_id)
    if file is None:
        raise FileMissing(f"no file {file_id!r}")
    return file


@routes.delete("/api/v1/files/{file_id}")
@auth.requires("admin")
async def delete(request: web.Request) -> web.Response:
    """Delete a file (admin); its bytes go once no other file shares them. 204."""
    file_id = request.match_info["file_id"]
    if len(file_id) > 128 or not await _services(request).files.delete(file_id):
        raise FileMissing(f"no file {file_id[:128]!r}")
    return web.Response(status=204)

