"""The blocking client: :class:`AsyncClient` driven by a private event loop, for scripts and notebooks
without asyncio. (Inside a running event loop, use :class:`AsyncClient`.)"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from graph_runtime_client.async_client import AsyncClient, FileRef, TaskRef
from graph_runtime_client.models import Event, File, Plan, Task, TaskPage

T = TypeVar("T")


class Client:
    """A graph-runtime server, from blocking code: ``with Client(url, key) as gr: gr.run("flow")``.

    The same methods and arguments as :class:`AsyncClient` (see there), each returning its result.
    """

    def __init__(self, url: str, key: str, **options: Any) -> None:
        self._runner = asyncio.Runner()
        self._client = AsyncClient(url, key, **options)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._call(self._client.close())
        self._runner.close()

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self._runner.run(coroutine)

    def run(self, flow: str, **options: Any) -> Task:
        return self._call(self._client.run(flow, **options))

    def submit(self, flow: str, **options: Any) -> Task:
        return self._call(self._client.submit(flow, **options))

    def task(self, task: TaskRef) -> Task:
        return self._call(self._client.task(task))

    def wait(self, task: TaskRef, *, timeout: float | None = None) -> Task:
        return self._call(self._client.wait(task, timeout=timeout))

    def cancel(self, task: TaskRef) -> Task:
        return self._call(self._client.cancel(task))

    def tasks(self, **filters: Any) -> TaskPage:
        return self._call(self._client.tasks(**filters))

    def iter_tasks(self, **filters: Any) -> Iterator[Task]:
        return self._iterate(self._client.iter_tasks(**filters))

    def plan(self, flow: str, **options: Any) -> Plan:
        return self._call(self._client.plan(flow, **options))

    def events(self, task: TaskRef, *, last_event_id: str | None = None, max_failures: int = 10) -> Iterator[Event]:
        return self._iterate(self._client.events(task, last_event_id=last_event_id, max_failures=max_failures))

    def upload(self, source: str | os.PathLike[str] | bytes, **options: Any) -> File:
        return self._call(self._client.upload(source, **options))

    def download(self, file: FileRef, dest: str | os.PathLike[str] | None = None) -> bytes | Path:
        return self._call(self._client.download(file, dest))

    def _iterate(self, stream: Any) -> Iterator[Any]:
        try:
            while True:
                try:
                    yield self._call(stream.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            self._call(stream.aclose())

