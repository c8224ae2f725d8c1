"""What a process tells its operators: Prometheus metrics always, OpenTelemetry traces with the ``otel`` extra.

Everything is observed from outside the executor: the events hub's watchers (every node status
change, called in the node's asyncio task, and each task's stop), aiohttp middleware (requests)
and the engine's statement events. Nothing here imports opentelemetry
unless it is installed.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp.typedefs import Middleware

from graph_runtime.models import NodeRun, NodeStatus, Task
from http_api import traceparent
from http_api.metrics import Metrics
from nodes.errors import GraphRuntimeError
from storage import statement_timing

if TYPE_CHECKING:
    from http_api.services import Services
    from http_api.tracing import Tracing

NODE_ENDED = frozenset({NodeStatus.SUCCEEDED, NodeStatus.FAILED, NodeStatus.CANCELLED})
UNKNOWN_TYPE = "unknown"  # a node whose flow revision could not be read (deleted underneath a running task)
TYPE_CACHE = 512  # flow revisions whose node types are kept (a revision never changes)


def otel_installed() -> bool:
    return importlib.util.find_spec("opentelemetry") is not None


class Telemetry:
    """One app's metrics and (optionally) tracing, fed by the executor, the scheduler and the server."""

    def __init__(self, metrics: Metrics, tracing: Tracing | None = None) -> None:
        self.metrics = metrics
        self.tracing = tracing
        self._types: OrderedDict[tuple[str, int], dict[str, str]] = OrderedDict()
        self._loading: dict[tuple[str, int], list[tuple[Task, NodeRun]]] = {}  # node ends waiting for their types
        self._followed: set[int] = set()
        self._loads: set[asyncio.Task[None]] = set()
        self._services: Services | None = None

    @classmethod
    def create(cls, tracer_provider: Any = None) -> Telemetry:
        """Metrics, and tracing on ``tracer_provider``, else on the global one if an SDK has set it up.

        With the otel extra installed but no SDK provider configured, every span would be a no-op:
        tracing is left off then, as its bookkeeping would cost ~7% of a 10-node chain for nothing.
        """
        if tracer_provider is None and not otel_installed():
            return cls(Metrics())
        from http_api import tracing

        provider = tracer_provider or tracing.configured_provider()
        return cls(Metrics(), tracing.Tracing(provider) if provider is not None else None)

    def middlewares(self) -> list[Middleware]:
        """Outermost first: the timing sees every answer; the caller's ``traceparent`` is kept for the
        task an execute queues (or, with tracing on, an instrumentation's span around the request)."""
        current = self.tracing.current_traceparent if self.tracing is not None else None
        return [self.metrics.middleware(), traceparent.middleware(current)]

    def client_trace_configs(self) -> list[aiohttp.TraceConfig]:
        return [self.tracing.client_trace_config()] if self.tracing else []

    def attach(self, services: Services) -> Callable[[], None]:
        """Start observing ``services``' executor, scheduler and database; returns the undo."""
        self._services = services
        unwatch_nodes = services.events.watch_nodes(self.node_changed)
        unwatch_stops = services.events.watch_stops(self.task_stopped)
        services.callbacks.on_outcomes.append(self.metrics.callbacks_attempted)
        undo_statements = statement_timing.time_statements(services.repo.engine, self.metrics.statement)

        def detach() -> None:
            undo_statements()
            unwatch_nodes()
            unwatch_stops()
            services.callbacks.on_outcomes.remove(self.metrics.callbacks_attempted)

        return detach

    async def scrape(self) -> bytes:
        assert self._services is not None, "attach() first"
        return await self.metrics.scrape(self._services.repo, self._services.scheduler.running_count)

    # -- the executor's events ------------------------------------------------------------

    def node_changed(self, task: Task, run: NodeRun) -> None:
        """A node's status changed (the events hub calls this in the node's asyncio task)."""
        if task.id not in self._followed:
            self._followed.add(task.id)
        if self.tracing is not None:
            self.tracing.node_changed(task, run)
        if run.status in NODE_ENDED:
            types = self._types_of(task)
            if types is None:
                self._loading[(task.flow_id, task.revision)].append((task, run.copy()))
            else:
                self._node_ended(task, run, types.get(run.node_id, UNKNOWN_TYPE))

    def _node_ended(self, task: Task, run: NodeRun, node_type: str) -> None:
        self.metrics.node_ended(node_type, run)
        if self.tracing is not None:
            self.tracing.node_ended(task, run, node_type)

    def _types_of(self, task: Task) -> dict[str, str] | None:
        """The node types of the task's flow revision, or None while they are being read (once)."""
        key = (task.flow_id, task.revision)
        types = self._types.get(key)
        if types is None and key not in self._loading:
            self._loading[key] = []
            load = asyncio.get_running_loop().create_task(self._load_types(key))
            self._loads.add(load)
            load.add_done_callback(self._loads.discard)
        return types

    async def _load_types(self, key: tuple[str, int]) -> None:
        # The executor read this revision moments ago: the repository's flow cache answers at once.
        assert self._services is not None
        try:
            flow = await self._services.repo.load_flow(*key)
            types = {node.id: node.type for node in flow.nodes}
        except GraphRuntimeError:
            types = {}
        self._types[key] = types
        if len(self._types) > TYPE_CACHE:
            self._types.popitem(last=False)
        for task, run in self._loading.pop(key, []):
            self._node_ended(task, run, types.get(run.node_id, UNKNOWN_TYPE))

    def task_stopped(self, task: Task) -> None:
        """A task stopped running here (the events hub says so once its events are stored)."""
        if task.id not in self._followed:
            return
        self._followed.discard(task.id)
        if not task.status.ended:  # drained, handed over or shut down mid-run: it resumes later, maybe elsewhere
            if self.tracing is not None:
                self.tracing.task_stopped(task.id)
            return
        self.metrics.task_ended(task.flow_id, task.status)
        if self.tracing is not None:
            self.tracing.task_ended(task)
