"""OpenTelemetry spans for tasks and nodes (the ``otel`` extra): imported only when it is installed.

Spans are made from the executor's listener: a task's span opens at its first node event with the
task's ``started`` time and closes when the scheduler reports the task ended, with its
``finished`` time. A node's span carries the node's own start and end times but is made at its
end, in one call with all its attributes (the SDK's per-call cost is most of a span's), or at
its first outgoing request if sooner: the listener marks the node current in the node's asyncio
task, so the shared HTTP session's trace hook sends a W3C ``traceparent`` naming the node's span
on every request the node makes (``http_request``, ``llm.*``, file fetches).

A ``traceparent`` sent with the execute request is the parent of the task's span. It is kept in
memory by task id, so it is continued when this process runs the task (the usual single server);
another process running it starts a new trace (a stored column would carry it: a migration).
"""

from __future__ import annotations

import contextvars
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from types import SimpleNamespace
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Middleware
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from graph_runtime.models import NodeRun, NodeStatus, Task, TaskStatus

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MAX_PENDING = 10_000  # traceparents of queued tasks kept; a task run elsewhere never claims its entry
NODE_FAILED = frozenset({NodeStatus.FAILED, NodeStatus.CANCELLED})


def configured_provider() -> trace.TracerProvider | None:
    """The global tracer provider if something set one up (``opentelemetry-instrument``, your code), else None."""
    provider = trace.get_tracer_provider()
    return None if isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider)) else provider


@dataclass
class _NodeTrace:
    """A running node: its span is made at its end, or at its first HTTP request if sooner."""

    name: str
    parent: otel_context.Context
    start: int | None
    recording: bool  # False when the task's trace is not sampled: no node span is made
    span: Span | None = None


_CURRENT_NODE: contextvars.ContextVar[_NodeTrace | None] = contextvars.ContextVar("graph_runtime_node", default=None)


def _ns(when: datetime | None) -> int | None:
    return int(when.timestamp() * 1e9) if when is not None else None


class Tracing:
    """Spans for the tasks and nodes this process runs, on ``provider``."""

    def __init__(self, provider: trace.TracerProvider) -> None:
        self._tracer = provider.get_tracer("graph_runtime")
        self._propagator = TraceContextTextMapPropagator()
        self._parents: OrderedDict[int, otel_context.Context] = OrderedDict()
        self._tasks: dict[int, Span] = {}
        self._nodes: dict[tuple[int, str], _NodeTrace] = {}

    # -- the execute request --------------------------------------------------------------

    def middleware(self) -> Middleware:
        """Makes an incoming ``traceparent`` the current context while the request is handled."""

        @web.middleware
        async def continue_trace(request: web.Request, handler: Handler) -> web.StreamResponse:
            if "traceparent" not in request.headers:
                return await handler(request)
            token = otel_context.attach(self._propagator.extract(request.headers))
            try:
                return await handler(request)
            finally:
                otel_context.detach(token)

        return continue_trace

    def queued(self, task: Task) -> None:
        """A task was queued: remember the caller's trace (if any) as its span's parent."""
        parent = otel_context.get_current()
        if trace.get_current_span(parent).get_span_context().is_valid:
            self._parents[task.id] = parent
            if len(self._parents) > MAX_PENDING:
                self._parents.popitem(last=False)

    # -- the executor's events ------------------------------------------------------------

    def node_changed(self, task: Task, run: NodeRun) -> None:
        """Called in the node's own asyncio task: a start makes the node current there (for its requests)."""
        if run.status is not NodeStatus.RUNNING:
            return
        key = (task.id, run.node_id)
        node = self._nodes.get(key)
        if node is None:
            node = self._nodes[key] = self._new_node(task, run, _ns(run.started))
        _CURRENT_NODE.set(node)  # this task's context only; it ends with the node

    def node_ended(self, task: Task, run: NodeRun, node_type: str | None) -> None:
        node = self._nodes.pop((task.id, run.node_id), None)
        if node is None:  # ended without a start (served from the cache): a span of its own all the same
            node = self._new_node(task, run, _ns(run.started or run.finished))
        if not node.recording:  # the task's trace is not sampled: its nodes' spans would record nothing
            return
        attributes: dict[str, Any] = {"graph_runtime.node_type": node_type or "unknown",
                                      "graph_runtime.status": run.status.value, "graph_runtime.attempts": run.attempts,
                                      "graph_runtime.cost": run.cost or 0.0}
        if run.cached:
            attributes["graph_runtime.cached"] = True
        # One call with every attribute where it can be: the SDK's per-call cost is most of a span's.
        span = node.span
        if span is None:
            span = self._tracer.start_span(node.name, context=node.parent, start_time=node.start, attributes=attributes)
        else:
            span.set_attributes(attributes)
        if run.status in NODE_FAILED and run.error is not None:
            span.set_status(Status(StatusCode.ERROR, f"{run.error.code}: {run.error.message}"))
        span.end(end_time=_ns(run.finished))

    def task_ended(self, task: Task) -> None:
        span = self._tasks.pop(task.id, None)
        if span is None:
            return
        self._end_nodes(task.id, _ns(task.finished))  # a node cut off without an end event
        span.set_attributes({"graph_runtime.status": task.status.value,
                             "graph_runtime.cost": task.execution_cost or 0.0})
        if task.status is not TaskStatus.SUCCEEDED and task.error is not None:
            span.set_status(Status(StatusCode.ERROR, f"{task.error.code}: {task.error.message}"))
        span.end(end_time=_ns(task.finished))

    def task_stopped(self, task_id: int) -> None:
        """Drained or shut down mid-run: end what is open now (a resume makes new spans)."""
        self._end_nodes(task_id, None)
        span = self._tasks.pop(task_id, None)
        if span is not None:
            span.end()

    def _end_nodes(self, task_id: int, when: int | None) -> None:
        for key in [key for key in self._nodes if key[0] == task_id]:
            node = self._nodes.pop(key)
            if node.recording:
                span = node.span or self._tracer.start_span(node.name, context=node.parent, start_time=node.start)
                span.end(end_time=when)

    def _new_node(self, task: Task, run: NodeRun, start: int | None) -> _NodeTrace:
        task_span = self._task_span(task)
        return _NodeTrace(f"node {run.node_id}", trace.set_span_in_context(task_span), start, task_span.is_recording())

    def _task_span(self, task: Task) -> Span:
        span = self._tasks.get(task.id)
        if span is None:
            span = self._tasks[task.id] = self._tracer.start_span(
                f"task {task.flow_id}", context=self._parents.pop(task.id, None), kind=SpanKind.INTERNAL,
                start_time=_ns(task.started),
                attributes={"graph_runtime.task_id": task.id, "graph_runtime.flow_id": task.flow_id,
                            "graph_runtime.revision": task.revision})
        return span

    # -- outgoing requests ----------------------------------------------------------------

    def client_trace_config(self) -> aiohttp.TraceConfig:
        """For the shared HTTP session: each request carries the current span as ``traceparent``."""
        config = aiohttp.TraceConfig()

        async def on_request_start(session: aiohttp.ClientSession, ctx: SimpleNamespace,
                                   params: aiohttp.TraceRequestStartParams) -> None:
            node = _CURRENT_NODE.get()
            if node is None:
                return
            if not node.recording:  # not sampled: the task's context goes on, flagged so
                self._propagator.inject(params.headers, context=node.parent)
                return
            if node.span is None:  # a node's request: its span is made now, to be named as the parent
                node.span = self._tracer.start_span(node.name, context=node.parent, start_time=node.start)
            self._propagator.inject(params.headers, context=trace.set_span_in_context(node.span))

        config.on_request_start.append(on_request_start)
        return config

