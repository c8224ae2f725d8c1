"""OpenTelemetry spans for tasks and nodes (the ``otel`` extra): imported only when it is installed.

Spans are made from the events hub's watchers: a task's span opens at its first node event with
the task's ``started`` time and closes when the task stops here, with its ``finished`` time. A
node's span carries the node's own start and end times but is made at its end, in one call with
all its attributes (the SDK's per-call cost is most of a span's), or at its first outgoing request
if sooner: a node's start marks it current in the node's asyncio task, so the shared HTTP
session's trace hook sends a W3C ``traceparent`` naming the node's span on every request the node
makes (``http_request``, ``llm.*``, file fetches).

The per-node path is kept to that one SDK call and a few dictionary operations: the nodes' parent
context is made once per task, a start stores the node run itself (its ``started`` is set once and
kept through retries), and nothing is attached to OpenTelemetry's context.

A ``traceparent`` sent with the execute request is stored with the task (``TaskRequest.traceparent``,
see :mod:`http_api.traceparent`), so whichever process runs the task continues the caller's trace.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field
from datetime import datetime
from types import SimpleNamespace
from typing import Any

import aiohttp
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from graph_runtime.models import NodeRun, NodeStatus, Task, TaskStatus

NODE_FAILED = frozenset({NodeStatus.FAILED, NodeStatus.CANCELLED})


def configured_provider() -> trace.TracerProvider | None:
    """The global tracer provider if something set one up (``opentelemetry-instrument``, your code), else None."""
    provider = trace.get_tracer_provider()
    return None if isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider)) else provider


@dataclass(slots=True)
class _TaskTrace:
    """A task running here: its span, and its nodes' parent context (made once, not per node)."""

    span: Span
    parent: otel_context.Context
    recording: bool  # False when the task's trace is not sampled: no node span is made
    running: dict[str, NodeRun] = field(default_factory=dict)  # started, no end seen yet
    early: dict[str, Span] = field(default_factory=dict)  # spans made at a node's first request


_CURRENT_NODE: contextvars.ContextVar[tuple[_TaskTrace, NodeRun] | None] = contextvars.ContextVar(
    "graph_runtime_node", default=None)


def _ns(when: datetime | None) -> int | None:
    return int(when.timestamp() * 1e9) if when is not None else None


def _node_name(node_id: str) -> str:
    return f"node {node_id}"


class Tracing:
    """Spans for the tasks and nodes this process runs, on ``provider``."""

    def __init__(self, provider: trace.TracerProvider) -> None:
        self._tracer = provider.get_tracer("graph_runtime")
        self._propagator = TraceContextTextMapPropagator()
        self._tasks: dict[int, _TaskTrace] = {}

    @staticmethod
    def current_traceparent() -> str | None:
        """The current span as a ``traceparent`` (an instrumentation's server span around a request), if any."""
        span_context = trace.get_current_span().get_span_context()
        if not span_context.is_valid:
            return None
        return f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}-{int(span_context.trace_flags) & 0xff:02x}"

    # -- the events hub ------------------------------------------------------------------------

    def node_changed(self, task: Task, run: NodeRun) -> None:
        """Called in the node's own asyncio task: a start makes the node current there (for its requests)."""
        if run.status is not NodeStatus.RUNNING:
            return
        traced = self._tasks.get(task.id) or self._start_task(task)
        traced.running.setdefault(run.node_id, run)  # a retry's start keeps the first
        _CURRENT_NODE.set((traced, run))  # this asyncio task's context only; it ends with the node

    def node_ended(self, task: Task, run: NodeRun, node_type: str | None) -> None:
        traced = self._tasks.get(task.id) or self._start_task(task)  # a task whose first node came from the cache
        traced.running.pop(run.node_id, None)
        if not traced.recording:  # the task's trace is not sampled: its nodes' spans would record nothing
            return
        attributes: dict[str, Any] = {"graph_runtime.node_type": node_type or "unknown",
                                      "graph_runtime.status": run.status.value, "graph_runtime.attempts": run.attempts,
                                      "graph_runtime.cost": run.cost or 0.0}
        if run.cached:
            attributes["graph_runtime.cached"] = True
        span = traced.early.pop(run.node_id, None) if traced.early else None
        if span is None:  # the usual case: one SDK call with every attribute
            span = self._tracer.start_span(_node_name(run.node_id), context=traced.parent,
                                           start_time=_ns(run.started or run.finished), attributes=attributes)
        else:
            span.set_attributes(attributes)
        if run.error is not None and run.status in NODE_FAILED:
            span.set_status(Status(StatusCode.ERROR, f"{run.error.code}: {run.error.message}"))
        span.end(end_time=_ns(run.finished))

    def task_ended(self, task: Task) -> None:
        traced = self._tasks.pop(task.id, None)
        if traced is None:
            return
        self._end_nodes(traced, _ns(task.finished))  # a node cut off without an end event
        span = traced.span
        span.set_attributes({"graph_runtime.status": task.status.value,
                             "graph_runtime.cost": task.execution_cost or 0.0})
        if task.status is not TaskStatus.SUCCEEDED and task.error is not None:
            span.set_status(Status(StatusCode.ERROR, f"{task.error.code}: {task.error.message}"))
        span.end(end_time=_ns(task.finished))

    def task_stopped(self, task_id: int) -> None:
        """Drained or shut down mid-run: end what is open now (a resume makes new spans)."""
        traced = self._tasks.pop(task_id, None)
        if traced is not None:
            self._end_nodes(traced, None)
            traced.span.end()

    def _end_nodes(self, traced: _TaskTrace, when: int | None) -> None:
        if not traced.recording:
            return
        for node_id, run in traced.running.items():
            span = traced.early.pop(node_id, None) or self._tracer.start_span(
                _node_name(node_id), context=traced.parent, start_time=_ns(run.started))
            span.end(end_time=when)
        for span in traced.early.values():  # made at a request a node sent after its end
            span.end(end_time=when)

    def _start_task(self, task: Task) -> _TaskTrace:
        caller = task.request.traceparent if task.request is not None else None
        parent = self._propagator.extract({"traceparent": caller}) if caller is not None else None
        span = self._tracer.start_span(
            f"task {task.flow_id}", context=parent, kind=SpanKind.INTERNAL, start_time=_ns(task.started),
            attributes={"graph_runtime.task_id": task.id, "graph_runtime.flow_id": task.flow_id,
                        "graph_runtime.revision": task.revision})
        traced = self._tasks[task.id] = _TaskTrace(span, trace.set_span_in_context(span), span.is_recording())
        return traced

    # -- outgoing requests ----------------------------------------------------------------

    def client_trace_config(self) -> aiohttp.TraceConfig:
        """For the shared HTTP session: each request carries the current span as ``traceparent``."""
        config = aiohttp.TraceConfig()

        async def on_request_start(session: aiohttp.ClientSession, ctx: SimpleNamespace,
                                   params: aiohttp.TraceRequestStartParams) -> None:
            current = _CURRENT_NODE.get()
            if current is None:
                return
            traced, run = current
            if not traced.recording:  # not sampled: the task's context goes on, flagged so
                self._propagator.inject(params.headers, context=traced.parent)
                return
            span = traced.early.get(run.node_id)
            if span is None:  # a node's request: its span is made now, to be named as the parent
                span = traced.early[run.node_id] = self._tracer.start_span(
                    _node_name(run.node_id), context=traced.parent, start_time=_ns(run.started))
            self._propagator.inject(params.headers, context=trace.set_span_in_context(span))

        config.on_request_start.append(on_request_start)
        return config

