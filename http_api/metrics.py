"""Prometheus metrics of one app: a registry of its own, so several servers in one process never collide.

What is counted here is what this process saw (tasks its executor ended, its node runs, its
statements and requests); Prometheus sums the processes. The two database gauges (queued and
running tasks) are read at scrape time and cover every process on the database: two indexed
counts (``ix_task_status_id``), well under a millisecond on SQLite.

Labels are bounded: a flow id, a node type, a task or node status, a route's pattern (never the
raw path: ``/api/v1/task/{task_id}``), an HTTP method and status, an SQL verb.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from graph_runtime.models import NodeRun, NodeStatus, TaskStatus
from storage.callbacks import DELIVERED, GIVEN_UP, PENDING, Outcome
from storage.repository import Repository

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Nodes run from a millisecond (merge) to many minutes (an LLM, ffmpeg).
NODE_BUCKETS = (0.001, 0.005, 0.025, 0.1, 0.5, 1.0, 2.5, 10.0, 30.0, 60.0, 300.0, 1800.0)
# Statements and requests: sub-millisecond reads to a slow ?wait.
FAST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0)
UNMATCHED = "unmatched"  # the route label of a request no route matched (404/405): one series, not one per path
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# A callback attempt's outcome label, by the state it leaves its delivery in (storage.callbacks).
CALLBACK_OUTCOMES = {DELIVERED: "delivered", PENDING: "failed", GIVEN_UP: "given_up"}
SQL_VERBS = frozenset({"select", "insert", "update", "delete", "begin", "commit", "rollback", "pragma", "with"})


class Metrics:
    """The app's metrics and the one place that updates them."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.tasks = Counter("graph_runtime_tasks", "Tasks this process ran to an end, by flow and final status",
                             ["flow", "status"], registry=r)
        self.queued = Gauge("graph_runtime_tasks_queued", "Tasks waiting for a worker (every process on the database)",
                            registry=r)
        self.running = Gauge("graph_runtime_tasks_running", "Tasks running (every process on the database)", registry=r)
        self.running_here = Gauge("graph_runtime_tasks_running_here", "Tasks running in this process", registry=r)
        self.node_seconds = Histogram("graph_runtime_node_duration_seconds",
                                      "Node runs' wall time (all tries), by node type and outcome",
                                      ["type", "status"], buckets=NODE_BUCKETS, registry=r)
        self.cost = Counter("graph_runtime_node_cost", "Credits node runs cost, by node type", ["type"], registry=r)
        self.saved_cost = Counter("graph_runtime_node_saved_cost",
                                  "Credits the output cache saved (what the cached runs had cost), by node type",
                                  ["type"], registry=r)
        self.cache_hits = Counter("graph_runtime_node_cache_hits", "Node runs served from the output cache",
                                  ["type"], registry=r)
        self.db_seconds = Histogram("graph_runtime_db_statement_duration_seconds",
                                    "SQL statement latency through SQLAlchemy, by SQL verb",
                                    ["verb"], buckets=FAST_BUCKETS, registry=r)
        self.http_seconds = Histogram("graph_runtime_http_request_duration_seconds",
                                      "HTTP request latency, by method, route pattern and status",
                                      ["method", "route", "status"], buckets=FAST_BUCKETS, registry=r)
        self.callback_attempts = Counter(
            "graph_runtime_callback_attempts",
            "Callback POSTs this process made, by outcome: delivered (a 2xx), failed (retried later), "
            "given_up (failed, and the last)", ["outcome"], registry=r)
        # Each outcome's series exists from the start (at 0), so a rate() over it never lacks a sample.
        self._callback_outcomes = {state: self.callback_attempts.labels(outcome)
                                   for state, outcome in CALLBACK_OUTCOMES.items()}
        self._per_node: dict[tuple[str, str], tuple[Any, Any]] = {}
        self._per_verb: dict[str, Any] = {}

    def node_ended(self, node_type: str, run: NodeRun) -> None:
        """A node run reached an end status (not ``skipped``: it never ran)."""
        if run.status is NodeStatus.SKIPPED:
            return
        if run.cached:
            self.cache_hits.labels(node_type).inc()
            if run.saved_cost:
                self.saved_cost.labels(node_type).inc(run.saved_cost)
            return
        seconds, cost = self._node_series(node_type, run.status.value)
        if run.execution_time is not None:
            seconds.observe(run.execution_time)
        if run.cost:
            cost.inc(run.cost)

    def _node_series(self, node_type: str, status: str) -> tuple[Any, Any]:
        # ``labels()`` validates and locks on every call; a node's end is the hot path, so keep the children.
        series = self._per_node.get((node_type, status))
        if series is None:
            series = self._per_node[(node_type, status)] = (self.node_seconds.labels(node_type, status),
                                                            self.cost.labels(node_type))
        return series

    def callbacks_attempted(self, outcomes: Sequence[Outcome]) -> None:
        """The callback dispatcher's attempts of one batch, each with the state it leaves its delivery in."""
        for outcome in outcomes:
            self._callback_outcomes[outcome.state].inc()

    def task_ended(self, flow_id: str, status: TaskStatus) -> None:
        self.tasks.labels(flow_id, status.value).inc()

    def statement(self, sql: str, seconds: float) -> None:
        words = sql[:16].split(None, 1)
        verb = words[0].lower() if words else "other"
        series = self._per_verb.get(verb)
        if series is None:  # ``labels()`` validates and locks: once per verb, not per statement
            series = self._per_verb[verb] = self.db_seconds.labels(verb if verb in SQL_VERBS else "other")
        series.observe(seconds)

    async def scrape(self, repo: Repository, running_here: int) -> bytes:
        """The exposition text, with the database gauges read now."""
        self.queued.set(await repo.count_tasks(TaskStatus.QUEUED))
        self.running.set(await repo.count_tasks(TaskStatus.RUNNING))
        self.running_here.set(running_here)
        return generate_latest(self.registry)

    def middleware(self) -> Middleware:
        """An aiohttp middleware timing every request by its route's pattern (put it outermost)."""

        @web.middleware
        async def time_request(request: web.Request, handler: Handler) -> web.StreamResponse:
            started = time.perf_counter()
            status = "500"
            try:
                response = await handler(request)
                status = str(response.status)
                return response
            except web.HTTPException as exc:
                status = str(exc.status)
                raise
            except BaseException:
                status = "aborted"  # the client went away, or a bug the error middleware did not map
                raise
            finally:
                resource = request.match_info.route.resource
                route = resource.canonical if resource is not None else UNMATCHED
                method = request.method if request.method in METHODS else "other"
                self.http_seconds.labels(method, route, status).observe(time.perf_counter() - started)

        return time_request


# The classic text format: what every Prometheus (2.x and 3.x) and agent reads; our names need no escaping.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
