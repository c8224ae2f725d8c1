"""``graph-runtime tasks list|show|cancel|watch`` and ``run --remote``: on a server through the
Python client (``--url``/``--key``), or on the database directly (``--db``), with the same output.

Both sources answer the client's typed values (:mod:`graph_runtime_client.models`): the local one
turns the API's own task view into them, so a task prints the same whichever way it was read.

The live table of ``watch`` and ``run --remote`` follows a server's event stream (the client's
``events()``: node changes as they happen, and the nodes' log lines printed above the table); if
the stream cannot be had or keeps dropping, it polls the task instead, as it does on a database.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import os
import sys
import time
from typing import Any, Protocol

from rich.console import Console
from rich.live import Live

import graph_runtime_client as client
from graph_runtime.models import TaskStatus
from http_api import errors
from http_api.app import close_services, open_services
from http_api.progress import render
from http_api.services import Services
from http_api.settings import Settings
from http_api.views import history_view, task_view
from nodes import codec

POLL_S = 0.25  # the live table's refresh where there is no event stream (a database, a stream that failed)
STREAM_DROPS = 3  # drops in a row, with no event between, before the table falls back to polling


class TaskSource(Protocol):
    """Where tasks are read and cancelled: a server (:class:`graph_runtime_client.AsyncClient`) or the database."""

    async def task(self, task: int) -> client.Task: ...
    async def tasks(self, *, flow_id: str | None = None, status: str | None = None, limit: int | None = None,
                    before: int | None = None) -> client.TaskPage: ...
    async def cancel(self, task: int) -> client.Task: ...


class DatabaseTasks:
    """Tasks read from (and cancelled in) the database, as the API would answer them."""

    def __init__(self, services: Services) -> None:
        self.repo = services.repo

    async def task(self, task: int) -> client.Task:
        return client.Task.from_json(_as_json(task_view(await self.repo.get_task(task))))

    async def tasks(self, *, flow_id: str | None = None, status: str | None = None, limit: int | None = None,
                    before: int | None = None) -> client.TaskPage:
        page = await self.repo.task_history(flow_id=flow_id, status=_status(status), limit=limit or 50, before=before,
                                            budget_bytes=0)
        return client.TaskPage.from_json(_as_json(history_view(page)))

    async def cancel(self, task: int) -> client.Task:
        return client.Task.from_json(_as_json(task_view(await self.repo.request_cancel(task))))


def _as_json(view: dict[str, Any]) -> Any:
    return codec.loads(codec.dumps(view))  # datetimes become the wire's text, as a server sends them


def _status(value: str | None) -> TaskStatus | None:
    if not value:
        return None
    try:
        return TaskStatus.from_number(int(value)) if value.isdigit() else TaskStatus(value)
    except (KeyError, ValueError):
        raise errors.RequestInvalid(f"--status {value!r}: one of {', '.join(s.value for s in TaskStatus)}") from None


def remote(args: argparse.Namespace) -> tuple[str, str] | None:
    """``(url, key)`` when the command goes to a server (``--url`` or GRAPH_RUNTIME_URL), else None."""
    url = getattr(args, "url", None) or os.environ.get("GRAPH_RUNTIME_URL")
    if not url:
        return None
    key = getattr(args, "key", None) or os.environ.get("GRAPH_RUNTIME_KEY")
    if not key:
        raise errors.RequestInvalid("--url needs a key too: --key TOKEN (or GRAPH_RUNTIME_KEY)")
    return url, key


async def run_command(args: argparse.Namespace, settings: Settings) -> int:
    """``tasks …`` or ``run --remote``; API errors become one ``error:`` line and exit 1."""
    try:
        target = remote(args)
        if target is not None:
            async with client.AsyncClient(*target) as server:
                if args.command == "run":
                    return await run_remote(server, args)
                return await tasks_command(server, args)
        if args.command == "run":
            raise errors.RequestInvalid("run --remote needs --url URL and --key TOKEN (or GRAPH_RUNTIME_URL/_KEY)")
        services = await open_services(settings.model_copy(update={"flows_dir": None}))
        try:
            return await tasks_command(DatabaseTasks(services), args)
        finally:
            await close_services(services)
    except client.ApiError as exc:
        print(f"error: {exc.message} ({exc.code}{f', field {exc.field}' if exc.field else ''})", file=sys.stderr)
        return 1
    except (client.ClientError, OSError, TimeoutError, ValueError) as exc:
        print(f"error: {exc or type(exc).__name__}", file=sys.stderr)
        return 1


async def tasks_command(source: TaskSource, args: argparse.Namespace) -> int:
    if args.tasks_command == "list":
        return await list_tasks(source, args)
    if args.tasks_command == "cancel":
        task = await source.cancel(args.task_id)
        print(f"task {task.id}: {task.status.value}")
        return 0
    task = await (watch(source, args.task_id) if args.tasks_command == "watch" else source.task(args.task_id))
    print(json.dumps(task.raw, ensure_ascii=False, separators=(",", ":")))
    return 0 if args.tasks_command == "show" or task.succeeded else 1


async def list_tasks(source: TaskSource, args: argparse.Namespace) -> int:
    page = await source.tasks(flow_id=args.flow, status=args.status, limit=args.limit, before=args.before)
    for task in page.tasks:
        took = f"{task.execution_time:.3f}s" if task.execution_time is not None else "-"
        cost = f"{task.execution_cost:g}" if task.execution_cost is not None else "-"
        error = f"  {task.error.code} at {task.error.node_id}" if task.error else ""
        created = task.created.strftime("%Y-%m-%d %H:%M:%S") if task.created else "-"
        print(f"{task.id:>8}  {task.status.value:<9}  {task.flow_id} rev {task.revision}  {created}Z  {took:>9}  "
              f"cost {cost}{error}")
    if page.next_before is not None:
        print(f"(more: --before {page.next_before})", file=sys.stderr)
    return 0


async def watch(source: TaskSource, task_id: int) -> client.Task:
    """The live node table on stderr until the task ends; the ended task (as ``source.task`` reads it)."""
    started = time.monotonic()
    task = await source.task(task_id)
    with Live(render(task, started), console=Console(stderr=True), refresh_per_second=8) as live:
        if not task.ended and isinstance(source, client.AsyncClient):
            try:
                task = await _follow(source, task, live, started)
            except client.ClientError as exc:  # no stream here, or it kept dropping: poll from where it stood
                if isinstance(exc, client.ApiError) and exc.status in (401, 403):
                    raise
                live.console.print(f"(the event stream failed: {exc}; polling the task)", markup=False, highlight=False)
        while not task.ended:
            await asyncio.sleep(POLL_S)
            task = await source.task(task_id)
            live.update(render(task, started))
    return task


async def _follow(server: client.AsyncClient, task: client.Task, live: Live, started: float) -> client.Task:
    """Feed the table from the task's event stream until its final event; then the ended task."""
    raw = copy.deepcopy(task.raw)
    async for event in server.events(task.id, max_failures=STREAM_DROPS):
        data = event.data if isinstance(event.data, dict) else {}
        if event.event == "task":
            raw = data
        elif event.event == "node":
            node = dict(data)
            raw.setdefault("nodes", {})[node.pop("node_id")] = node
        elif event.event == "log":
            live.console.print(f"{data.get('node_id')} {data.get('level')}: {data.get('message')}",
                               markup=False, highlight=False)
            continue
        else:
            continue  # progress and tokens: the table has no column for them
        task = client.Task.from_json(raw)
        live.update(render(task, started))
    # The final event was the ended task; read once as `tasks show` would, so the JSON printed is the same.
    return await server.task(task.id) if task.ended else task


async def run_remote(server: client.AsyncClient, args: argparse.Namespace) -> int:
    """``run --remote``: queue the task on the server, show its nodes live, print the task JSON."""
    from http_api.commands import parse_sets  # the same NODE.PATH=VALUE parsing as a local run

    files = {}
    for item in args.file:
        target, sep, path = item.partition("=")
        if not sep or not path:
            raise ValueError(f"--file {item!r}: expected NODE.PATH=FILE")
        files[target] = path
    queued = await server.submit(args.flow_id, start=args.start, end=args.end, result=args.result,
                                 settings=parse_sets(args.set), files=files, revision=args.revision,
                                 timeout_s=args.timeout)
    task = await watch(server, queued.id)
    print(json.dumps(task.raw, ensure_ascii=False, separators=(",", ":")))
    return 0 if task.succeeded else 1

