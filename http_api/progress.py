"""``graph-runtime run``: a flow executed in-process with a live table of its nodes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from rich.console import Console
from rich.live import Live
from rich.table import Table

from graph_runtime.models import NodeRun, NodeStatus, Task, is_item_run
from http_api.schemas import ExecuteBody, parse_body
from http_api.services import Services, submit

STYLE = {
    NodeStatus.PENDING: "dim", NodeStatus.RUNNING: "yellow", NodeStatus.SUCCEEDED: "green",
    NodeStatus.FAILED: "bold red", NodeStatus.SKIPPED: "dim", NodeStatus.CANCELLED: "magenta",
}


BAR_WIDTH = 24


class NodeRow(Protocol):
    """What the table shows of a node: a runtime ``NodeRun`` here, or the client's from a server."""

    @property
    def status(self) -> str: ...
    @property
    def attempts(self) -> int: ...
    @property
    def started(self) -> datetime | None: ...
    @property
    def finished(self) -> datetime | None: ...
    @property
    def execution_time(self) -> float | None: ...
    @property
    def cost(self) -> float | None: ...


class TaskRows(Protocol):
    """What the table shows of a task (``graph_runtime.models.Task`` or ``graph_runtime_client.Task``)."""

    @property
    def id(self) -> int | None: ...
    @property
    def flow_id(self) -> str: ...
    @property
    def revision(self) -> int | None: ...
    @property
    def nodes(self) -> Mapping[str, NodeRow]: ...


def timeline(task: TaskRows) -> dict[str, str]:
    """A Gantt bar per node: where in the task's span it ran (█) — overlap shows concurrency."""
    spans = {n: (r.started, r.finished or datetime.now(UTC)) for n, r in task.nodes.items()
             if r.started and not is_item_run(n)}
    if not spans:
        return {}
    first = min(start for start, _ in spans.values())
    total = max((end - first).total_seconds() for _, end in spans.values()) or 1e-9
    bars = {}
    for node_id, (start, end) in spans.items():
        left = int((start - first).total_seconds() / total * BAR_WIDTH)
        width = max(1, round((end - start).total_seconds() / total * BAR_WIDTH))
        bars[node_id] = " " * left + "█" * min(width, BAR_WIDTH - left)
    return bars


def render(task: TaskRows, started: float) -> Table:
    table = Table(title=f"task {task.id} · flow {task.flow_id} rev {task.revision} · {time.monotonic() - started:.1f}s")
    table.add_column("node", no_wrap=True)
    table.add_column("status", no_wrap=True)
    for column in ("tries", "time (s)", "cost"):
        table.add_column(column)
    table.add_column("timeline", no_wrap=True, min_width=BAR_WIDTH, overflow="crop")
    bars = timeline(task)
    for node_id, run in task.nodes.items():
        if is_item_run(node_id):
            continue  # a map's items: its own row counts them
        status = NodeStatus(run.status)
        elapsed = f"{run.execution_time:.3f}" if run.execution_time is not None else ""
        items = getattr(run, "items", None)
        done = f" {items.get('succeeded', 0) + items.get('failed', 0)}/{items.get('total', 0)}" if items else ""
        pool = getattr(run, "waiting_for_pool", None)
        done += f" · waiting for pool {pool}" if pool else ""
        table.add_row(node_id, f"[{STYLE[status]}]{status.value}{done}[/]", str(run.attempts), elapsed,
                      f"{run.cost:g}" if run.cost is not None else "", f"[{STYLE[status]}]{bars.get(node_id, '')}[/]")
    return table


async def run_with_progress(services: Services, flow_id: str, raw: dict[str, Any], *, revision: int | None) -> Task:
    """Queue the task and run exactly it here, as a worker runs a task (the scheduler's claim, lease
    heartbeat, loop watch and child tasks), while a live table shows its nodes. The task is created
    running under this process's claim (as a subflow's child is): one statement, and no worker of a
    server on the same database is woken for it or takes it first."""
    scheduler = services.scheduler
    await scheduler.start()
    try:
        task, _ = await submit(services, flow_id, parse_body(ExecuteBody, raw), revision=revision,
                               raw_body=raw, claim=scheduler.claim_here(), adopt=scheduler.adopt)
        console = Console(stderr=True)
        started = time.monotonic()
        shown = task
        with Live(render(shown, started), console=console, refresh_per_second=8, transient=False) as live:

            def on_change(changed: Task, _: NodeRun) -> None:
                nonlocal shown
                if changed.id == task.id:  # a subflow's child task runs here too: the table is the task's
                    shown = changed
                    live.update(render(shown, started))

            unwatch = services.events.watch_nodes(on_change)
            ticker = asyncio.create_task(_tick(live, lambda: shown, started))
            try:
                ended = await scheduler.run_child(task.id)  # adopted by the insert's callback, or claimed
            finally:
                ticker.cancel()
                unwatch()
            live.update(render(ended, started))
    finally:
        await scheduler.stop()
    return await services.repo.get_task(task.id)


async def _tick(live: Live, task: Callable[[], Task], started: float) -> None:
    while True:
        await asyncio.sleep(0.25)
        live.update(render(task(), started))
