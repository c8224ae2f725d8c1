"""Issue 11's scale-out figures, each against a reference measured in the same run.

Every server here is the product's command in its own processes (``graph-runtime serve``,
``graph-runtime worker``), on a database made for the run and dropped after it:

- ``processes-sqlite`` / ``processes-pg``: trivial flows over HTTP (a one-node flow, ``?wait``),
  ``serve --processes 2`` against ``serve``, both up at once on databases of their own, load
  windows alternating. The load comes from ``bench/http.py``'s generator (separate processes of
  raw keep-alive HTTP/1.1 connections): on 2 cores it competes with the servers for the CPU, and
  the row says how much each used.
- ``workers``: I/O-bound flows (one ``delay`` node of 200 ms), ``MAX_CONCURRENT_JOBS`` 10 per
  worker, behind an API that runs nothing (``serve --workers 0``) on PostgreSQL: one
  ``graph-runtime worker`` against four. A backlog is queued over HTTP while the workers are
  paused, then drained; throughput = tasks ÷ (last task finished − first task started), from the
  tasks' own timestamps.
- ``enqueue-start``: with the four workers idle, tasks queued one at a time; the time from a
  task's ``created`` to its first node's ``started`` (both from the task). Reference: PostgreSQL's
  own wake-up, a NOTIFY's commit to its delivery on a LISTENing connection.

Only 127.0.0.1 is contacted; every loop is bounded in count and time.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import asyncpg  # type: ignore[import-untyped]

from bench import http, postgres
from bench.cases import Case, Shape, Sizes
from bench.figures import Figure, percentile
from bench.results import FLOOR, OURS, Row, Target
from tests import pg

ONE_PROCESS = "1 process"
ONE_WORKER = "1 worker"
TRIVIAL = Shape("deep", 1)  # one node: a flow that does nothing, so the task's own costs are measured
IO_FLOW = "bench-io"
LISTENING = re.compile(r"\d+ processes listening on ")
KEY_LINE = re.compile(r"GRAPH_RUNTIME_KEY=(\S+)")
T = TypeVar("T")
CLI = [sys.executable, "-m", "http_api.cli"]
RETRIES_503 = 30


def io_flow(seconds: float) -> dict[str, Any]:
    node = {"id": "wait", "type": "delay", "settings": {"seconds": seconds, "value": 1}}
    return {"id": IO_FLOW, "name": "bench I/O-bound", "nodes": [node],
            "defaults": {"start_node_id": "wait", "end_node_id": "wait"}}


class TreeServer(http.Server):
    """A server whose CPU is its process's and its children's (``serve --processes``: the supervisor's)."""

    def cpu_seconds(self) -> float:
        return sum(_cpu(pid) for pid in _tree(self.proc.pid))


def _tree(pid: int) -> list[int]:
    found = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text(encoding="ascii").split()
    except OSError:
        return found
    for child in children:
        found += _tree(int(child))
    return found


def _cpu(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Spec:
    """What to start: ``serve SERVE_ARGS`` on ``db`` with ``flows``, and ``workers`` worker processes."""

    name: str
    db: str
    flows: list[dict[str, Any]]
    serve_args: list[str]
    workers: int = 0


@dataclass
class Cluster:
    """An API server (and maybe worker processes) on one database, with an admin token."""

    name: str
    db: str
    server: TreeServer
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)


@contextmanager
def clusters(workdir: Path, logs: Path, specs: list[Spec]) -> Iterator[list[Cluster]]:
    """Every spec's processes started at once, then each waited for (its first key, /healthz, every
    ``--processes`` child listening, every worker up); all stopped on exit. Output: ``logs/scale-NAME*.log``."""
    logs.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        started = [_start(stack, workdir, logs, spec) for spec in specs]
        for spec, found in zip(specs, started, strict=True):
            _ready(spec, found, logs)
        yield started


def _start(stack: ExitStack, workdir: Path, logs: Path, spec: Spec) -> Cluster:
    flows_dir = workdir / f"{spec.name}-flows"
    flows_dir.mkdir(parents=True)
    for flow in spec.flows:
        (flows_dir / f"{flow['id']}.json").write_text(json.dumps(flow), encoding="utf-8")
    quiet = ["--db", spec.db, "--log-level", "WARNING", "--cache-max-bytes", "0"]
    port = http._free_port()
    with open(logs / f"scale-{spec.name}.log", "wb") as log:  # the child writes to its own copy of the file
        proc = subprocess.Popen([*CLI, "serve", "--host", http.HOST, "--port", str(port), "--flows", str(flows_dir),
                                 *quiet, *spec.serve_args], env=http._child_env(), stdout=log, stderr=subprocess.STDOUT)
    stack.callback(_stop, proc)
    found = Cluster(spec.name, spec.db, TreeServer(proc, port, token=""))
    for index in range(spec.workers):
        with open(logs / f"scale-{spec.name}-worker-{index}.log", "wb") as log:
            worker = subprocess.Popen([*CLI, "worker", *quiet], env=http._child_env(), stdout=log,
                                      stderr=subprocess.STDOUT)
        stack.callback(_stop, worker)
        found.workers.append(worker)
    return found


def _ready(spec: Spec, found: Cluster, logs: Path) -> None:
    path, proc = logs / f"scale-{spec.name}.log", found.server.proc
    # A new database: serve prints its first admin key (one of --processes' children does).
    key = _wait_for(lambda: KEY_LINE.search(path.read_text(errors="replace")), f"{spec.name}: the first key", proc)
    found.server.token = key.group(1)
    http._wait_healthy(found.server, logs)
    if "--processes" in spec.serve_args:
        _wait_for(lambda: LISTENING.search(path.read_text(errors="replace")), f"{spec.name}: every process listening",
                  proc)
    for index, worker in enumerate(found.workers):
        out = logs / f"scale-{spec.name}-worker-{index}.log"
        _wait_for(lambda out=out: "graph-runtime worker" in out.read_text(errors="replace"),  # type: ignore[misc]
                  f"{spec.name}: worker {index} started", worker)


def _wait_for(check: Callable[[], T | None], what: str, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> T:
    deadline = time.monotonic() + timeout
    while not (found := check()):
        if proc.poll() is not None:
            raise RuntimeError(f"{what}: the process exited with code {proc.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.05)
    return found


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@contextmanager
def pg_databases(count: int) -> Iterator[list[str]]:
    """``count`` throwaway PostgreSQL databases with our schema; dropped on exit."""
    user = asyncio.run(postgres.server_user())
    urls: list[str] = []
    try:
        for _ in range(count):
            urls.append(asyncio.run(pg.create_database(user)))
        yield urls
    finally:
        for url in urls:
            asyncio.run(pg.drop_database(url))


# -- serve --processes 2 against serve ----------------------------------------------------------


def measure_processes(sizes: Sizes, workdir: Path, logs: Path, case: Case, engine: str) -> Row:
    """On SQLite both set-ups are up at once and their windows alternate; on PostgreSQL one set-up at
    a time (1 process, then 2): this machine's server is shared, and three busy server processes
    with other people's tests ran it out of connections (``too many clients``)."""
    figures = {OURS: Figure("flows/s", higher_is_better=True), ONE_PROCESS: Figure("flows/s", higher_is_better=True)}
    cpu: dict[str, list[float]] = {OURS: [], ONE_PROCESS: []}
    load_cpu: list[float] = []
    flows = [TRIVIAL.flow_definition()]
    specs = {ONE_PROCESS: Spec(f"{engine}-1", "", flows, []), OURS: Spec(f"{engine}-2", "", flows, ["--processes", "2"])}
    with ExitStack() as stack:
        load = http.LoadGenerator(len(http._split(sizes.scale_clients, sizes.clients_per_load_process)),
                                  sizes.clients_per_load_process)
        stack.callback(load.close)
        if engine == "sqlite":
            both = [replace(spec, db=f"sqlite+aiosqlite:///{workdir / f'{spec.name}.db'}") for spec in specs.values()]
            with clusters(workdir, logs, both) as found:
                _load_rounds(sizes, case, load, {name: c.server for name, c in zip(specs, found, strict=True)},
                             figures, cpu, load_cpu)
        else:
            for name, spec in specs.items():
                with pg_databases(1) as [db], clusters(workdir, logs, [replace(spec, db=db)]) as [alone]:
                    _load_rounds(sizes, case, load, {name: alone.server}, figures, cpu, load_cpu)
    row = Row(case, "flows/s", figures=dict(figures),
              extra={"server CPU cores": cpu, "busiest load process CPU": load_cpu, "clients": sizes.scale_clients})
    ratio = _ratio(figures[OURS], figures[ONE_PROCESS])
    row.targets.append(Target(f"--processes 2 ÷ one process ({figures[ONE_PROCESS].median or 0:,.0f} flows/s) ≥ 1.6",
                              ratio, 1.6, at_most=False))
    row.targets.append(Target("≥ 1,500 flows/s (aim)", figures[OURS].median, 1500.0, at_most=False))
    how = ("both servers up at once, windows alternating" if engine == "sqlite"
           else "one server at a time (1 process, then 2)")
    per_flow = {name: _cpu_ms_per_flow(cpu[name], figures[name]) for name in figures}
    row.notes.append(f"{engine}: a one-node flow, POST …/execute?wait=60, {sizes.scale_clients} keep-alive clients in "
                     f"{len(http._split(sizes.scale_clients, sizes.clients_per_load_process))} load processes on the "
                     f"same 2 cores; servers used {_span(cpu[OURS])} cores (2 processes) and {_span(cpu[ONE_PROCESS])} "
                     f"(one), the busiest load process {_span(load_cpu)} of a core; server CPU per flow "
                     f"{per_flow[OURS]:.2f} ms (2 processes) and {per_flow[ONE_PROCESS]:.2f} ms (one); {how}, windows "
                     f"of {sizes.scale_seconds:g} s")
    return row


def _load_rounds(sizes: Sizes, case: Case, load: http.LoadGenerator, servers: dict[str, Any],
                 figures: dict[str, Figure], cpu: dict[str, list[float]], load_cpu: list[float]) -> None:
    """A warm-up window for each server (its processes' first flows load the flow and its plan), then
    ``http_repeats`` measured windows each, the order rotating."""
    for server in servers.values():
        load.run(server, _flows_load(server, sizes.scale_clients, min(1.0, sizes.scale_seconds), 0.0))
    names = list(servers)
    for repeat in range(sizes.http_repeats):
        for name in names[repeat % len(names):] + names[:repeat % len(names)]:
            result = load.run(servers[name], _flows_load(servers[name], sizes.scale_clients, sizes.scale_seconds,
                                                        min(1.0, sizes.scale_seconds / 2)))
            _check(result, case.name)
            figures[name].add(result.per_second)
            cpu[name].append(result.server_cpu)
            load_cpu.append(result.load_cpu)


def _cpu_ms_per_flow(cores: list[float], flows: Figure) -> float:
    """The servers' CPU milliseconds per completed flow, window by window (median)."""
    return statistics.median(c / f * 1e3 for c, f in zip(cores, flows.samples, strict=True) if f) if cores else 0.0


def _flows_load(server: http.Server, clients: int, seconds: float, warmup_s: float) -> http.Load:
    return http.Load(server.port, http.execute_request(server, TRIVIAL), 201, b'"status":3', clients, seconds, warmup_s)


def _check(result: http.LoadResult, name: str) -> None:
    if result.errors:
        raise RuntimeError(f"{name}: {result.errors} wrong answers, the first: {result.first_error}")
    if not result.completed:
        raise RuntimeError(f"{name}: no request completed in the window")


def _ratio(ours: Figure, reference: Figure) -> float | None:
    return ours.median / reference.median if ours.median and reference.median else None


def _span(values: list[float]) -> str:
    return f"{min(values):.2f}–{max(values):.2f}" if values else "—"


# -- 1 worker against 4, and enqueue → start -----------------------------------------------------


def measure_workers(sizes: Sizes, workdir: Path, logs: Path, workers_case: Case, start_case: Case) -> list[Row]:
    flows = [io_flow(sizes.io_node_s), TRIVIAL.flow_definition()]
    figures = {OURS: Figure("flows/s", higher_is_better=True), ONE_WORKER: Figure("flows/s", higher_is_better=True)}
    # One set-up at a time, not both up and alternating as elsewhere: a worker at 10 concurrent tasks
    # holds up to ~15 PostgreSQL connections, and both together came near the server's default 100.
    for name, workers in ((ONE_WORKER, 1), (OURS, sizes.io_workers)):
        with ExitStack() as stack:
            [db] = stack.enter_context(pg_databases(1))
            [found] = stack.enter_context(clusters(workdir, logs, [Spec(f"workers-{workers}", db, flows,
                                                                        ["--workers", "0"], workers=workers)]))
            asyncio.run(_io_batch(found, max(10, sizes.io_tasks // 10)))  # warm-up
            for _ in range(sizes.http_repeats):
                figures[name].add(asyncio.run(_io_batch(found, sizes.io_tasks)))
            if name == OURS:
                delays = asyncio.run(_enqueue_to_start(found, sizes.enqueue_samples))
                wake = asyncio.run(postgres.notify_latencies(found.db, sizes.enqueue_samples))
    workers_row = Row(workers_case, "flows/s", figures=dict(figures))
    workers_row.targets.append(Target(f"{sizes.io_workers} workers ÷ 1 ({figures[ONE_WORKER].median or 0:.0f} flows/s) "
                                      "≥ 3.5", _ratio(figures[OURS], figures[ONE_WORKER]), 3.5, at_most=False))
    workers_row.notes.append(f"PostgreSQL; one {sizes.io_node_s * 1e3:.0f} ms delay node per flow, MAX_CONCURRENT_JOBS 10 "
                             f"per worker (ideal: {10 / sizes.io_node_s:.0f} flows/s per worker); API `serve --workers 0`; "
                             f"a backlog of {sizes.io_tasks} tasks per run, queued over HTTP while the workers are "
                             "paused (SIGSTOP), then drained: tasks ÷ (last finished − first started); 1 worker's runs "
                             f"first, then the {sizes.io_workers} workers' (each on a database of its own)")
    start_row = Row(start_case, "p95 ms", figures={OURS: Figure("p95 ms", [percentile(delays, 95)]),
                                                   FLOOR: Figure("p95 ms", [percentile(wake, 95)])},
                    extra={"created→started ms": delays, "NOTIFY→delivered ms": wake})
    start_row.targets.append(Target("p95 ≤ 20 ms", percentile(delays, 95), 20.0))
    start_row.notes.append(f"PostgreSQL, {sizes.io_workers} idle `graph-runtime worker`s behind `serve --workers 0`; "
                           f"{len(delays)} tasks queued one at a time (?wait); a task's created → its node's started; "
                           f"p50 {percentile(delays, 50):.1f} ms; floor = NOTIFY commit → delivery to a LISTENing "
                           f"asyncpg connection, p50 {percentile(wake, 50):.2f} ms")
    return [workers_row, start_row]


async def _io_batch(found: Cluster, tasks: int) -> float:
    """A backlog of ``tasks`` I/O-bound tasks, queued over HTTP while the workers are paused (SIGSTOP),
    then drained: flows/s = tasks ÷ (last finished − first started), from the tasks' timestamps.

    Paused, so what is measured is the workers' rate, not how fast one API process queues tasks
    (on 2 busy cores that can be the slower of the two), and every worker starts on the backlog
    at the same moment."""
    for worker in found.workers:
        os.kill(worker.pid, signal.SIGSTOP)
    try:
        ids = await _queue(found, IO_FLOW, tasks, clients=16)
    finally:
        for worker in found.workers:
            os.kill(worker.pid, signal.SIGCONT)
    conn = await asyncpg.connect(postgres.plain_url(found.db))
    try:
        deadline = time.monotonic() + 300
        while True:
            row = await conn.fetchrow("SELECT count(*) AS ended, min(started) AS first, max(finished) AS last FROM task"
                                      " WHERE id = ANY($1::bigint[]) AND finished IS NOT NULL", ids)
            if row["ended"] == len(ids):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{found.name}: {row['ended']} of {len(ids)} tasks ended within 300 s")
            await asyncio.sleep(0.05)
        failed = await conn.fetch("SELECT id, status, error FROM task WHERE id = ANY($1::bigint[])"
                                  " AND status <> 'succeeded'", ids)
    finally:
        await conn.close()
    if failed:
        raise RuntimeError(f"{found.name}: {len(failed)} I/O-bound tasks did not succeed, the first: {dict(failed[0])}")
    return len(ids) / (row["last"] - row["first"]).total_seconds()


async def _queue(found: Cluster, flow_id: str, tasks: int, clients: int) -> list[int]:
    url = f"http://{http.HOST}:{found.server.port}/api/v1/flow/{flow_id}/execute"
    headers = {"Authorization": f"Basic {found.server.token}"}
    ids: list[int] = []
    left = iter(range(tasks))

    async def client(session: aiohttp.ClientSession) -> None:
        for _ in left:
            for _attempt in range(RETRIES_503):
                async with session.post(url, json={}) as response:
                    body = await response.json()
                if response.status != 503:  # the database busy (this machine's PostgreSQL is shared): as told, retry
                    break
                await asyncio.sleep(min(1.0, float(response.headers.get("Retry-After", "1"))))
            if response.status != 201:
                raise RuntimeError(f"execute answered {response.status}: {body}")
            ids.append(int(body["id"]))

    async with aiohttp.ClientSession(headers=headers) as session:
        await asyncio.gather(*(client(session) for _ in range(clients)))
    return ids


async def _enqueue_to_start(found: Cluster, samples: int) -> list[float]:
    """ms from created to the node's started, tasks queued one at a time while the workers idle."""
    url = f"http://{http.HOST}:{found.server.port}/api/v1/flow/{TRIVIAL.flow_id}/execute?wait=30"
    delays = []
    async with aiohttp.ClientSession(headers={"Authorization": f"Basic {found.server.token}"}) as session:
        for _ in range(samples):
            async with session.post(url, json={}) as response:
                task = await response.json()
            if task.get("status") != 3:
                raise RuntimeError(f"the trivial flow did not succeed: {task}")
            started = min(_when(node["started"]) for node in task["nodes"].values() if node.get("started"))
            delays.append((started - _when(task["created"])).total_seconds() * 1e3)
            await asyncio.sleep(0.02)  # the workers go back to waiting
    return delays


def _when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
