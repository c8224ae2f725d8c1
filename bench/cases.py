"""The graphs every engine runs, and the cases of the suite with their sizes.

Every node does the same trivial work in every engine, so what is measured is the engine:
the source node outputs ``{"x": 1}``; every other node merges its inputs (objects, in input-name
order), which is our built-in ``merge`` node type. Two shapes:

- ``deep-N``: a chain of N nodes (``n0`` → ``n1`` → … → ``n{N-1}``); ``chain-10`` is ``deep-10``.
- ``wide-N``: a source, N independent nodes fed by it, and one node joining them (N + 2 nodes).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import networkx as nx

SOURCE_DATA = {"x": 1}


@dataclass(frozen=True)
class Shape:
    kind: str  # "deep" or "wide"
    size: int
    node: str = "merge"  # or "template": each non-source node renders its input (it does some work)

    @property
    def name(self) -> str:
        return f"{self.kind}-{self.size}" + ("" if self.node == "merge" else f"-{self.node}")

    @property
    def flow_id(self) -> str:
        return f"bench-{self.name}"

    @property
    def node_count(self) -> int:
        return self.size if self.kind == "deep" else self.size + 2

    def graph(self) -> nx.DiGraph:
        """The DAG with each edge's input name (``input``), as the floor references run it."""
        graph = nx.DiGraph()
        if self.kind == "deep":
            graph.add_nodes_from(f"n{i}" for i in range(self.size))
            graph.add_edges_from((f"n{i - 1}", f"n{i}", {"input": "v"}) for i in range(1, self.size))
        else:
            graph.add_nodes_from(["src", *(f"w{i}" for i in range(self.size)), "join"])
            graph.add_edges_from(("src", f"w{i}", {"input": "v"}) for i in range(self.size))
            graph.add_edges_from((f"w{i}", "join", {"input": f"w{i}"}) for i in range(self.size))
        return graph

    def flow_definition(self) -> dict[str, Any]:
        """The same DAG as a graph-runtime flow: a ``start`` source and ``merge`` nodes."""
        graph = self.graph()
        source = next(n for n in graph if graph.in_degree(n) == 0)
        sink = next(n for n in graph if graph.out_degree(n) == 0)
        work = {"type": "merge"} if self.node == "merge" else {"type": "template", "settings": {"template": "{{ v }}"}}
        nodes = [{"id": n, "type": "start", "settings": {"data": SOURCE_DATA}} if n == source
                 else {"id": n, **work} for n in graph]
        edges = [{"from": a, "to": b, "input": data["input"]} for a, b, data in graph.edges(data=True)]
        return {"id": self.flow_id, "name": f"bench {self.name}", "nodes": nodes, "edges": edges,
                "defaults": {"start_node_id": source, "end_node_id": sink}}


def merge(inputs: dict[str, Any]) -> dict[str, Any]:
    """What every non-source node computes: its inputs merged, in input-name order (as ``merge``)."""
    merged: dict[str, Any] = {}
    for name in sorted(inputs):
        value = inputs[name]
        if isinstance(value, dict):
            merged.update(value)
        else:
            merged[name] = value
    return merged


@dataclass(frozen=True)
class Sizes:
    """How big and how often; ``SMOKE`` is the tiny run the test suite uses."""

    chain: int = 10
    wide: int = 100
    sequential_flows: int = 50
    prefect_sequential_flows: int = 5  # Prefect's flows take seconds each: fewer per repeat
    growth: tuple[int, ...] = (100, 1_000, 10_000)
    prefect_max_nodes: int = 102  # Prefect runs the growth cases up to this many nodes (seconds per run above)
    repeats: int = 5
    big_repeats: int = 2  # for graphs of big_nodes nodes or more
    big_nodes: int = 5_000
    case_budget_s: float = 60.0  # an engine stops repeating a case once its runs took this long
    prefect_repeats: int = 3
    http_repeats: int = 3
    rss_repeats: int = 2
    http_latency_requests: int = 200
    http_seconds: float = 3.0
    reference_seconds: float = 1.0  # the in-process references of the HTTP rows: steadier, shorter windows
    http_clients: tuple[int, ...] = (16, 64)
    poll_clients: int = 16
    clients_per_load_process: int = 32
    rss_nodes: int = 10_000
    rss_queued: int = 10_000
    llm_calls: int = 1000
    files_mib: int = 1024
    media_runs: int = 10
    media_tasks: int = 20
    media_size: tuple[int, int] = (4000, 3000)  # 12 megapixels
    cache_chain: int = 100  # the chain whose cached nodes give the per-node cost of a hit
    plan_nodes: int = 1_000  # the flow the plan cases plan
    map_items: int = 1_000  # the map case's items, and its wide flow's width
    callback_deliveries: int = 2_000  # signed callbacks per run to a local receiver (bench/callbacks.py)
    scale_clients: int = 64  # HTTP clients against serve and serve --processes 2 (bench/scale.py)
    scale_seconds: float = 3.0
    io_tasks: int = 400  # I/O-bound tasks per run against 1 and io_workers workers
    io_node_s: float = 0.2
    io_workers: int = 4
    enqueue_samples: int = 100  # tasks queued one at a time to idle workers
    events_flows: int = 200  # chains per round, with and without the events hub (bench/events.py)
    event_streams: int = 1000  # open event streams beside the chain load (bench/events.py)
    event_stream_tasks: int = 4  # the long tasks those streams follow
    event_tick_s: float = 0.04  # each long task's node length: a node event every half of it
    event_task_margin_s: float = 60.0  # how much longer than the window the long tasks are (then cancelled)

    def repeats_for(self, shape: Shape) -> int:
        return self.big_repeats if shape.node_count >= self.big_nodes else self.repeats

    def with_repeats(self, repeats: int | None) -> Sizes:
        if repeats is None:
            return self
        return replace(self, repeats=repeats, big_repeats=min(self.big_repeats, repeats),
                       prefect_repeats=min(self.prefect_repeats, repeats), http_repeats=min(self.http_repeats, repeats),
                       rss_repeats=min(self.rss_repeats, repeats))


DEFAULT = Sizes()
SMOKE = Sizes(chain=5, wide=10, sequential_flows=5, prefect_sequential_flows=2, growth=(5, 10, 20),
              prefect_max_nodes=22, repeats=2, big_repeats=2, big_nodes=20, prefect_repeats=2, http_repeats=2,
              rss_repeats=1, http_latency_requests=10, http_seconds=0.5, reference_seconds=0.2, rss_nodes=20, rss_queued=20,
              llm_calls=20, files_mib=8, media_runs=1, media_tasks=2, media_size=(400, 300), cache_chain=10,
              plan_nodes=20, map_items=10, callback_deliveries=40,
              scale_clients=4, scale_seconds=1.0, io_tasks=20, io_node_s=0.05,
              io_workers=2, enqueue_samples=5, events_flows=10, event_streams=20, event_stream_tasks=2,
              event_task_margin_s=10.0)


@dataclass(frozen=True)
class Case:
    name: str
    group: str  # inprocess, growth, http, rss
    title: str


def cases(sizes: Sizes) -> list[Case]:
    """Every case of a run at ``sizes``, in the order they run and are reported."""
    chain, wide = Shape("deep", sizes.chain), Shape("wide", sizes.wide)
    found = [
        Case("chain", "inprocess", f"{chain.name}: one flow of a {sizes.chain}-node chain"),
        Case("wide", "inprocess", f"{wide.name}: {sizes.wide} independent nodes joined by one"),
        Case("per-flow", "inprocess", f"{sizes.sequential_flows} sequential runs of {chain.name}, per flow"),
    ]
    for shape in growth_shapes(sizes):
        found.append(Case(f"growth-{shape.name}", "growth", f"{shape.name} ({shape.node_count} nodes), per node"))
    found.append(Case("http-latency", "http", f"HTTP {chain.name} submit→succeeded, concurrency 1 (?wait)"))
    for clients in sizes.http_clients:
        found.append(Case(f"http-flows-{clients}", "http", f"HTTP {chain.name} completed flows/s, {clients} clients"))
    found.append(Case("http-polls", "http", f"HTTP GET /task/{{id}} requests/s, {sizes.poll_clients} clients"))
    found.append(Case("rss-task", "rss", f"peak RSS, one wide-{sizes.rss_nodes} task"))
    found.append(Case("rss-queued", "rss", f"peak RSS, {sizes.rss_queued} queued {chain.name} tasks"))
    found.append(Case("llm-chat", "llm", f"llm.chat vs the OpenAI stand-in: overhead per call, {sizes.llm_calls} calls"))
    found.append(Case("files-transfer", "files", f"upload then download of a {sizes.files_mib} MiB file over loopback"))
    megapixels = sizes.media_size[0] * sizes.media_size[1] / 1e6
    found.append(Case("image-resize", "media", f"image.resize of a {megapixels:.0f} MP JPEG vs Pillow called directly"))
    found.append(Case("image-pipeline", "media", f"{sizes.media_tasks} resize → watermark tasks at 10 concurrent jobs"))
    found.append(Case("cache-flow", "reuse", f"{chain.name} of templates run again, every one a cache hit, vs the cache off"))
    found.append(Case("cache-hit", "reuse", f"a cache hit per node, deep-{sizes.cache_chain} every merge a hit"))
    found.append(Case("plan", "reuse", f"plan of a {sizes.plan_nodes}-node flow, in process"))
    found.append(Case("plan-http", "reuse", f"plan of a {sizes.plan_nodes}-node flow over HTTP"))
    found.append(Case("map", "reuse", f"map over {sizes.map_items} merge items vs wide-{sizes.map_items}, per item/node"))
    found.append(Case("callbacks", "callbacks", f"{sizes.callback_deliveries} signed task-end callbacks to a local "
                                                "receiver, deliveries/s"))
    found.append(Case("events-overhead", "events", "deep-10 in-process with the events hub vs without, "
                                                   "nobody listening, per flow"))
    found.append(Case("events-streams", "events", f"HTTP deep-10 flows/s with {sizes.event_streams} event "
                                                  "streams open vs none"))
    found.append(Case("pg-chain", "scale", f"PostgreSQL, one worker: {chain.name} per flow vs an asyncpg durable floor"))
    found.append(Case("pg-dbos", "scale", f"PostgreSQL: {chain.name} per flow vs DBOS's {sizes.chain}-step workflow"))
    found.append(Case("workers", "scale", f"{sizes.io_node_s * 1e3:.0f} ms I/O-bound flows/s: "
                                          f"{sizes.io_workers} worker processes vs 1 (PostgreSQL)"))
    found.append(Case("enqueue-start", "scale", "PostgreSQL, idle workers: task created → node started, p95"))
    found.append(Case("processes-sqlite", "scale", "HTTP trivial flows/s: serve --processes 2 vs serve (SQLite)"))
    found.append(Case("processes-pg", "scale", "HTTP trivial flows/s: serve --processes 2 vs serve (PostgreSQL)"))
    return found


def growth_shapes(sizes: Sizes) -> list[Shape]:
    return [Shape(kind, n) for kind in ("deep", "wide") for n in sizes.growth]


def select(all_cases: list[Case], only: list[str] | None) -> list[Case]:
    """The cases named in ``only`` (a case name, a name prefix, or a group); all when empty."""
    if not only:
        return all_cases
    chosen = [c for c in all_cases if any(c.name == o or c.group == o or c.name.startswith(o) for o in only)]
    unknown = [o for o in only if not any(c.name == o or c.group == o or c.name.startswith(o) for c in all_cases)]
    if unknown:
        names = ", ".join(c.name for c in all_cases)
        groups = ", ".join(dict.fromkeys(c.group for c in all_cases))
        raise SystemExit(f"unknown case {', '.join(unknown)}; cases: {names}; groups: {groups}")
    return chosen
