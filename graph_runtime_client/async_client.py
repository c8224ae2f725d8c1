"""The asyncio client: every call is one or a few requests to the server's API (SPEC §3, §7, §9, §11)."""

from __future__ import annotations

import copy
import mimetypes
import os
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp

from graph_runtime_client import errors, events
from graph_runtime_client.models import Event, File, Plan, Task, TaskPage
from graph_runtime_client.transport import Transport

MAX_WAIT_S = 60  # the server holds a ?wait answer at most this long
CHUNK = 256 * 1024
TaskRef = Task | int
FileRef = File | str | Mapping[str, Any]
Upload = str | os.PathLike[str] | bytes | File


class AsyncClient:
    """A graph-runtime server, from asyncio code. Use ``async with AsyncClient(url, key) as gr:``.

    Args:
        url: the server's base URL, e.g. ``http://127.0.0.1:8080``.
        key: a server key's token.
        retries: how many times a 503 or 429 answer is retried (honouring ``Retry-After``).
        max_retry_wait: the longest wait between two tries, in seconds.
        timeout: seconds for one request (a long-poll adds its wait to it).
    """

    def __init__(self, url: str, key: str, *, retries: int = 5, max_retry_wait: float = 30.0,
                 timeout: float = 30.0) -> None:
        self.transport = Transport(url, key, retries=retries, max_retry_wait=max_retry_wait, timeout=timeout)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        await self.transport.close()

    # --- tasks --------------------------------------------------------------------------------

    async def run(self, flow: str, *, start: str | None = None, end: str | None = None, result: str | None = None,
                  settings: Mapping[str, Any] | None = None, files: Mapping[str, Upload] | None = None,
                  wait: bool = True, timeout: float | None = None, **options: Any) -> Task:
        """Execute ``flow`` and, with ``wait``, return the task once it has ended (any status: check
        ``task.succeeded``). ``files`` maps ``NODE.PATH`` (e.g. ``start.data.photo``) to a local path,
        bytes or an uploaded :class:`File`; each is uploaded and its file value put at that setting.
        ``timeout`` bounds the wait (:class:`errors.WaitTimedOut`); ``options`` as for :meth:`submit`."""
        first_wait = min(MAX_WAIT_S, timeout if timeout is not None else MAX_WAIT_S) if wait else 0
        started = time.monotonic()
        task = await self.submit(flow, start=start, end=end, result=result, settings=settings, files=files,
                                 wait=first_wait, **options)
        if not wait or task.ended:
            return task
        left = None if timeout is None else timeout - (time.monotonic() - started)
        return await self.wait(task, timeout=left)

    async def submit(self, flow: str, *, start: str | None = None, end: str | None = None,
                     result: str | None = None, settings: Mapping[str, Any] | None = None,
                     files: Mapping[str, Upload] | None = None, revision: int | None = None,
                     mode: str | None = None, timeout_s: float | None = None,
                     idempotency_key: str | None = None, wait: float = 0) -> Task:
        """Queue a task (``POST /api/v1/flow/{flow}/execute``) and return it as the server answered;
        ``wait`` (0–60 s) holds the answer until the task ends or that time passes."""
        node_settings = await self._with_files(settings or {}, files or {})
        body = {"start_node_id": start, "end_node_id": end, "result_node_id": result, "mode": mode,
                "timeout_s": timeout_s, "node_settings": node_settings}
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        answer = await self.transport.json("POST", f"/api/v1/flow/{flow}/execute",
                                           params={"revision": revision, "wait": int(wait) or None},
                                           body={k: v for k, v in body.items() if v is not None},
                                           headers=headers, extra_timeout=wait)
        return Task.from_json(answer)

    async def task(self, task: TaskRef) -> Task:
        """The task as it is now."""
        return Task.from_json(await self.transport.json("GET", f"/api/v1/task/{_task_id(task)}"))

    async def wait(self, task: TaskRef, *, timeout: float | None = None) -> Task:
        """The task once it has ended, long-polling ``GET /api/v1/task/{id}?wait=`` (one request per
        minute while it runs); past ``timeout`` seconds, :class:`errors.WaitTimedOut`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        task_id = _task_id(task)
        while True:
            left = MAX_WAIT_S if deadline is None else deadline - time.monotonic()
            seconds = max(1, min(MAX_WAIT_S, int(left)))
            answer = await self.transport.json("GET", f"/api/v1/task/{task_id}", params={"wait": seconds},
                                               extra_timeout=seconds)
            current = Task.from_json(answer)
            if current.ended:
                return current
            if deadline is not None and time.monotonic() >= deadline:
                raise errors.WaitTimedOut(current, timeout or 0.0)

    async def cancel(self, task: TaskRef) -> Task:
        """Cancel a queued or running task (the server answers once it has stopped, up to 5 s);
        an ended task raises :class:`errors.Conflict` (``task_ended``)."""
        return Task.from_json(await self.transport.json("POST", f"/api/v1/task/{_task_id(task)}/cancel",
                                                        extra_timeout=5))

    async def tasks(self, *, flow_id: str | None = None, status: str | None = None, mode: str | None = None,
                    limit: int | None = None, before: int | None = None, include: Iterable[str] = ()) -> TaskPage:
        """One page of history, newest first (``include``: ``data``, ``result``, ``nodes``)."""
        params = {"flow_id": flow_id, "status": status, "mode": mode, "limit": limit, "before": before,
                  "include": ",".join(include) or None}
        return TaskPage.from_json(await self.transport.json("GET", "/api/v1/tasks", params=params))

    async def iter_tasks(self, **filters: Any) -> AsyncIterator[Task]:
        """Every task matching ``filters`` (as for :meth:`tasks`), newest first, page after page."""
        before = filters.pop("before", None)
        while True:
            page = await self.tasks(before=before, **filters)
            for task in page.tasks:
                yield task
            if page.next_before is None:
                return
            before = page.next_before

    async def plan(self, flow: str, *, start: str | None = None, end: str | None = None, result: str | None = None,
                   settings: Mapping[str, Any] | None = None, revision: int | None = None) -> Plan:
        """The dry run: run set, parallel levels and cost range; writes nothing (``POST …/plan``)."""
        body = {"start_node_id": start, "end_node_id": end, "result_node_id": result, "node_settings": settings}
        answer = await self.transport.json("POST", f"/api/v1/flow/{flow}/plan", params={"revision": revision},
                                           body={k: v for k, v in body.items() if v is not None})
        return Plan.from_json(answer)

    async def events(self, task: TaskRef, *, last_event_id: str | None = None,
                     max_failures: int = 10) -> AsyncIterator[Event]:
        """The task's events (``task``, ``node``, ``progress``, ``log``, ``token``) until it ends,
        reconnecting with ``Last-Event-ID``; more than ``max_failures`` drops in a row with no
        event between raise :class:`StreamError`."""
        async for event in events.follow(self.transport, _task_id(task), last_event_id=last_event_id,
                                         max_failures=max_failures):
            yield event

    # --- files --------------------------------------------------------------------------------

    async def upload(self, source: str | os.PathLike[str] | bytes, *, name: str | None = None,
                     content_type: str | None = None) -> File:
        """Store a local file (streamed from disk) or bytes; the :class:`File` goes wherever a file is taken."""
        if isinstance(source, bytes):
            name = name or "file"
            opener: Any = lambda: source  # noqa: E731
        else:
            path = Path(source)
            if not path.is_file():
                raise FileNotFoundError(f"upload: no file {path}")
            name = name or path.name
            opener = lambda: path.open("rb")  # noqa: E731  (a fresh handle per try; aiohttp streams and closes it)
        content_type = content_type or mimetypes.guess_type(name)[0] or "application/octet-stream"
        answer = await self.transport.json("POST", "/api/v1/files", params={"name": name}, data=opener,
                                           headers={"Content-Type": content_type})
        return File.from_json(answer["file"])

    async def download(self, file: FileRef, dest: str | os.PathLike[str] | None = None) -> bytes | Path:
        """The file's bytes, or with ``dest`` streamed to that path (a directory: the file's own name
        in it) and the path returned. A partial download never takes the place of ``dest``."""
        file_id = _file_id(file)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.transport.timeout,
                                        sock_read=self.transport.timeout)
        response = await self.transport.open("GET", f"/api/v1/files/{file_id}", timeout=timeout)
        async with response:
            if dest is None:
                return await response.read()
            target = Path(dest)
            if target.is_dir():
                target = target / _download_name(file, response)
            partial = target.with_name(target.name + ".part")
            try:
                with partial.open("wb") as out:
                    async for chunk in response.content.iter_chunked(CHUNK):
                        out.write(chunk)
                partial.replace(target)
            finally:
                partial.unlink(missing_ok=True)
            return target

    async def _with_files(self, settings: Mapping[str, Any], files: Mapping[str, Upload]) -> dict[str, Any]:
        merged = copy.deepcopy(dict(settings))
        for target, source in files.items():
            file = source if isinstance(source, File) else await self.upload(source)
            _put(merged, target, file.as_value())
        return merged


def _put(settings: dict[str, Any], target: str, value: Any) -> None:
    """Set ``NODE.KEY[.KEY…]`` in node settings; a setting given twice is the caller's mistake."""
    parts = target.removeprefix("node_settings.").split(".")
    if len(parts) < 2 or not all(parts):
        raise ValueError(f"files: {target!r} is not NODE.PATH (e.g. 'start.data.photo')")
    cursor = settings
    for part in parts[:-1]:
        cursor = cursor.setdefault(part, {})
        if not isinstance(cursor, dict):
            raise ValueError(f"files: {target!r} goes through a setting that is not an object")
    if parts[-1] in cursor:
        raise ValueError(f"files: {target!r} is also given in settings")
    cursor[parts[-1]] = value


def _task_id(task: TaskRef) -> int:
    return task.id if isinstance(task, Task) else int(task)


def _file_id(file: FileRef) -> str:
    if isinstance(file, File):
        return file.id
    if isinstance(file, str):
        return file
    return str(file["$file"])


def _download_name(file: FileRef, response: aiohttp.ClientResponse) -> str:
    name = file.name if isinstance(file, File) else None
    if not name and response.content_disposition is not None:
        name = response.content_disposition.filename
    return Path(name or _file_id(file)).name
