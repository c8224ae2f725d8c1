"""Runs the selected cases in order — in-process, Prefect, HTTP, memory — with progress on stderr.

Within a case the engines take turns, one run each per repeat (the order rotates), so a drift of
the machine's speed touches every engine alike. Every engine gets one untimed warm-up run first,
except on graphs of ``Sizes.big_nodes`` nodes or more. An engine whose runs of a case have
taken more than ``Sizes.case_budget_s`` stops repeating (at least one run is always made); the
row says so.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bench import callbacks, cases, events, files, http, llm, media, postgres, prefect_ref, references, reuse, scale
from bench.cases import Case, Shape, Sizes
from bench.figures import Figure, percentile
from bench.inprocess import OurEngine
from bench.results import FLOOR, NAIVE, OURS, PREFECT, Row, Target

RunFlow = Callable[[], Awaitable[Any]]


@dataclass
class Suite:
    sizes: Sizes
    selected: list[Case]
    workdir: Path  # scratch: databases
    logs: Path  # kept: the server's and Prefect's output
    prefect: bool = True
    progress: Progress = field(default_factory=lambda: make_progress())
    rows: list[Row] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # engine or group → why it did not run
    _per_flow_s: dict[tuple[str, str], Figure] = field(default_factory=dict)  # (engine, shape) → s/flow

    def wants(self, name: str) -> bool:
        return any(c.name == name for c in self.selected)

    def case(self, name: str) -> Case:
        return next(c for c in self.selected if c.name == name)

    def run(self) -> list[Row]:
        with self.progress:
            asyncio.run(self._inprocess())
            if self.prefect and any(c.group in ("inprocess", "growth") for c in self.selected):
                self._prefect()
            if any(c.group == "http" for c in self.selected):
                self._http()
            if any(c.group == "rss" for c in self.selected):
                self._rss()
            if self.wants("llm-chat"):
                asyncio.run(self._llm())
            if self.wants("files-transfer"):
                asyncio.run(self._files())
            if any(c.group == "media" for c in self.selected):
                asyncio.run(self._media())
            if any(c.group == "reuse" for c in self.selected):
                asyncio.run(self._reuse())
            if self.wants("callbacks"):
                asyncio.run(self._callbacks())
            if any(c.group == "events" for c in self.selected):
                self._events()
            if any(c.group == "scale" for c in self.selected):
                self._scale()
        return self.rows

    # -- in-process: chain, wide, per flow, growth -----------------------------------------

    async def _inprocess(self) -> None:
        wanted = [c for c in self.selected if c.group in ("inprocess", "growth")]
        if not wanted:
            return
        ours = await OurEngine.open(self.workdir / "inprocess.db")
        conn = await references.open_naive_db(self.workdir / "naive.db")
        try:
            for case in wanted:
                await self._inprocess_case(case, ours, conn)
        finally:
            await conn.close()
            await ours.close()

    async def _inprocess_case(self, case: Case, ours: OurEngine, conn: Any) -> None:
        sizes = self.sizes
        if case.name == "per-flow":
            shape, flows = Shape("deep", sizes.chain), sizes.sequential_flows
        elif case.name == "chain":
            shape, flows = Shape("deep", sizes.chain), 1
        elif case.name == "wide":
            shape, flows = Shape("wide", sizes.wide), 1
        else:
            kind, size = case.name.removeprefix("growth-").split("-")
            shape, flows = Shape(kind, int(size)), 1
        key = f"{shape.name}x{flows}"
        engines = await self._engines(shape, ours, conn)
        # Measured already when a shape is both a case and a growth step (wide-100).
        engines = {name: run for name, run in engines.items() if (name, key) not in self._per_flow_s}
        if engines:
            await self._measure(case, key, shape, flows, engines)
        self.rows.append(self._inprocess_row(case, key, shape))

    async def _engines(self, shape: Shape, ours: OurEngine, conn: Any) -> dict[str, RunFlow]:
        await ours.install(shape)
        graph = shape.graph()
        floor, naive = references.Floor(graph), references.NaiveDurable(graph, conn, shape.flow_id)

        async def run_floor() -> None:
            references.check_result(await floor.run_flow())

        async def run_naive() -> None:
            references.check_result(await naive.run_flow())

        async def run_ours() -> None:
            await ours.run_flow(shape)

        return {FLOOR: run_floor, NAIVE: run_naive, OURS: run_ours}

    async def _measure(self, case: Case, key: str, shape: Shape, flows: int, engines: dict[str, RunFlow]) -> None:
        repeats = self.sizes.repeats_for(shape)
        big = shape.node_count >= self.sizes.big_nodes
        bar = self.progress.add_task(case.title, total=repeats * len(engines))
        spent = dict.fromkeys(engines, 0.0)
        for name in engines:
            self._per_flow_s[(name, key)] = Figure(unit="s/flow")
            if not big:
                await engines[name]()  # warm-up, untimed
        names = list(engines)
        for repeat in range(repeats):
            order = names[repeat % len(names):] + names[:repeat % len(names)]
            for name in order:
                if repeat > 0 and spent[name] > self.sizes.case_budget_s:
                    self.progress.advance(bar)
                    continue
                started = time.perf_counter()
                for _ in range(flows):
                    await engines[name]()
                elapsed = time.perf_counter() - started
                spent[name] += elapsed
                self._per_flow_s[(name, key)].add(elapsed / flows)
                self.progress.advance(bar)
        for name in names:
            done = len(self._per_flow_s[(name, key)].samples)
            if done < repeats:
                self._per_flow_s[(name, key)].note = (
                    f"{done} of {repeats} runs: its runs took {spent[name]:.0f} s, over the case's "
                    f"{self.sizes.case_budget_s:.0f} s budget")

    def _inprocess_row(self, case: Case, key: str, shape: Shape) -> Row:
        per_node = case.group == "growth"
        row = Row(case, "µs/node" if per_node else "ms/flow",
                  extra={"nodes": shape.node_count, "shape": shape.name, "kind": shape.kind, "size": shape.size})
        scale = 1e6 / shape.node_count if per_node else 1e3
        for (engine, k), figure in self._per_flow_s.items():
            if k == key:
                self._copy(figure, row.figure(engine), scale)
        if case.name in ("chain", "wide"):
            row.targets.append(Target(f"{OURS} ÷ {NAIVE} ≤ 1.0", row.ratio(NAIVE), 1.0))
        if per_node and shape.size == max(self.sizes.growth):
            self._growth_target(row, shape)
        return row

    def _growth_target(self, row: Row, shape: Shape) -> None:
        smallest = Shape(shape.kind, min(self.sizes.growth))
        first = self._per_flow_s.get((OURS, f"{smallest.name}x1"))
        last = self._per_flow_s.get((OURS, f"{shape.name}x1"))
        value = None
        if first is not None and last is not None and first.median and last.median:
            value = (last.median / shape.node_count) / (first.median / smallest.node_count)
        row.targets.append(Target(f"per node at {shape.node_count} ÷ at {smallest.node_count} nodes ≤ 1.5", value, 1.5))

    @staticmethod
    def _copy(source: Figure, target: Figure, scale: float) -> None:
        target.samples = [v * scale for v in source.samples]
        target.note = source.note

    # -- Prefect, in its own process ------------------------------------------------------

    def _prefect_plan(self) -> tuple[list[dict[str, Any]], dict[str, str]]:
        """The Prefect runs to make (one per distinct shape and batch) and which row each one feeds."""
        sizes, items, feeds = self.sizes, {}, {}
        for row in self.rows:
            if row.case.group not in ("inprocess", "growth"):
                continue
            shape = Shape(row.extra["kind"], row.extra["size"])
            if shape.node_count > sizes.prefect_max_nodes:
                row.notes.append(f"{PREFECT}: not run above {sizes.prefect_max_nodes} nodes (its runs take seconds to minutes)")
                continue
            flows = sizes.prefect_sequential_flows if row.case.name == "per-flow" else 1
            key = f"{shape.name}x{flows}"
            items[key] = {"key": key, "kind": shape.kind, "size": shape.size, "flows": flows,
                          "repeats": sizes.prefect_repeats}
            feeds[row.case.name] = key
        return list(items.values()), feeds

    def _prefect(self) -> None:
        if not prefect_installed():
            self.skipped[PREFECT] = "not installed (pip install -e '.[bench]')"
            return
        items, feeds = self._prefect_plan()
        bar = self.progress.add_task(f"{PREFECT} (ephemeral server start-up, then {len(items)} graphs)",
                                     total=1 + sum(i["repeats"] for i in items))
        samples: dict[str, list[float]] = {}
        home = tempfile.mkdtemp(prefix="prefect-home-", dir=self.workdir)
        self.logs.mkdir(parents=True, exist_ok=True)
        with open(self.logs / "prefect.log", "wb") as log:
            proc = subprocess.Popen([sys.executable, "-m", "bench.prefect_ref"], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=log, env=prefect_ref.environment(Path(home)))
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(json.dumps({"items": items}).encode())
            proc.stdin.close()
            for line in proc.stdout:
                message = json.loads(line)
                if "key" in message:
                    samples.setdefault(message["key"], []).append(message["value"])
                if "done" not in message:
                    self.progress.advance(bar)
            code = proc.wait(timeout=120)
        self.progress.stop_task(bar)
        if code != 0:
            self.skipped[PREFECT] = f"exited with code {code} after {sum(map(len, samples.values()))} runs; " \
                                    f"see {self.logs / 'prefect.log'}"
        for row in self.rows:
            found = samples.get(feeds.get(row.case.name, ""))
            if found:
                scale = 1e6 / row.extra["nodes"] if row.metric == "µs/node" else 1e3
                row.figure(PREFECT).samples = [v * scale for v in found]
                self._add_prefect_targets(row)

    def _add_prefect_targets(self, row: Row) -> None:
        if row.case.name != "per-flow":
            return
        ours, theirs = row.figures.get(OURS), row.figures.get(PREFECT)
        value = theirs.median / ours.median if ours and theirs and ours.median and theirs.median else None
        row.targets.append(Target(f"{PREFECT} ÷ {OURS} ≥ 100 (per flow)", value, 100.0, at_most=False))
        row.notes.append(f"{PREFECT}: {self.sizes.prefect_sequential_flows} sequential flows per run")

    # -- over HTTP ------------------------------------------------------------------------

    def _http(self) -> None:
        sizes, shape = self.sizes, Shape("deep", self.sizes.chain)
        processes = max(len(http._split(c, sizes.clients_per_load_process)) for c in (*sizes.http_clients, 1))
        bar = self.progress.add_task("HTTP: server start-up, load processes", total=None)
        with http.serving(self.workdir / "http", self.logs, shape) as server:
            load = http.LoadGenerator(processes, sizes.clients_per_load_process)
            try:
                self.progress.update(bar, description="HTTP: references in-process", total=1)
                references_rows = asyncio.run(self._http_references(shape))
                self.progress.advance(bar)
                self._http_cases(server, load, shape, references_rows)
            finally:
                load.close()

    async def _http_references(self, shape: Shape) -> dict[str, dict[str, Figure]]:
        """The naive durable and floor references of the HTTP rows, in-process, same run."""
        sizes = self.sizes
        found: dict[str, dict[str, Figure]] = {}
        conn = await references.open_naive_db(self.workdir / "http-naive.db")
        try:
            graph = shape.graph()
            floor, naive = references.Floor(graph), references.NaiveDurable(graph, conn, shape.flow_id)
            found["latency"] = {FLOOR: Figure("ms/flow"), NAIVE: Figure("ms/flow")}
            batch = max(1, min(20, sizes.http_latency_requests))
            for engine, figure in ((floor, found["latency"][FLOOR]), (naive, found["latency"][NAIVE])):
                await engine.run_flow()
                for _ in range(sizes.repeats):
                    started = time.perf_counter()
                    for _ in range(batch):
                        await engine.run_flow()
                    figure.add((time.perf_counter() - started) / batch * 1e3)
            for clients in sizes.http_clients:
                found[f"flows-{clients}"] = {
                    NAIVE: await _rate(lambda: naive.run_flow(), clients, self._reference_seconds, self._http_repeats),
                    FLOOR: await _rate(lambda: floor.run_flow(), clients, self._reference_seconds, self._http_repeats)}
            task_id = await naive.task_started()
            found["polls"] = {NAIVE: await _rate(lambda: naive.read_task(task_id), sizes.poll_clients,
                                                 self._reference_seconds, self._http_repeats)}
        finally:
            await conn.close()
        return found

    @property
    def _reference_seconds(self) -> float:
        return self.sizes.reference_seconds

    @property
    def _http_repeats(self) -> int:
        return min(self.sizes.repeats, self.sizes.http_repeats)

    def _http_cases(self, server: http.Server, load: http.LoadGenerator, shape: Shape,
                    refs: dict[str, dict[str, Figure]]) -> None:
        sizes = self.sizes
        status, task = server.request("POST", f"/api/v1/flow/{shape.flow_id}/execute?wait=30", {})
        if task.get("status") != 3:
            raise RuntimeError(f"the server did not run the chain: {status} {task}")
        execute = http.execute_request(server, shape)
        if self.wants("http-latency"):
            self._http_latency(server, load, execute, refs["latency"])
        for clients in sizes.http_clients:
            if self.wants(f"http-flows-{clients}"):
                spec = http.Load(server.port, execute, 201, b'"status":3', clients, sizes.http_seconds,
                                 warmup_s=min(1.0, sizes.http_seconds / 2))
                self._http_rate(f"http-flows-{clients}", "flows/s", server, load, spec, refs[f"flows-{clients}"],
                                aim=500.0)
        if self.wants("http-polls"):
            spec = http.Load(server.port, http.poll_request(server, task["id"]), 200, b'"status":3',
                             sizes.poll_clients, sizes.http_seconds, warmup_s=min(1.0, sizes.http_seconds / 2))
            self._http_rate("http-polls", "req/s", server, load, spec, refs["polls"], aim=3000.0)

    def _http_latency(self, server: http.Server, load: http.LoadGenerator, execute: bytes,
                      refs: dict[str, Figure]) -> None:
        sizes, case = self.sizes, self.case("http-latency")
        repeats = self._http_repeats
        bar = self.progress.add_task(case.title, total=repeats)
        p50, p99 = Row(case, "p50 ms"), Row(case, "p99 ms")
        pooled: list[float] = []
        spec = http.Load(server.port, execute, 201, b'"status":3', clients=1, seconds=3600.0, warmup_s=0.0,
                         max_requests=sizes.http_latency_requests, keep_latencies=True)
        warm = http.Load(server.port, execute, 201, b'"status":3', clients=1, seconds=3600.0, warmup_s=0.0,
                         max_requests=max(3, sizes.http_latency_requests // 10))
        load.run(server, warm)
        for _ in range(repeats):
            result = load.run(server, spec)
            _check(result, case.name)
            ms = [x * 1e3 for x in result.latencies]
            pooled.extend(ms)
            p50.figure(OURS).add(percentile(ms, 50))
            p99.figure(OURS).add(percentile(ms, 99))
            self.progress.advance(bar)
        for row in (p50, p99):
            for name, figure in refs.items():
                row.figures[name] = figure
        p50.notes.append(f"{sizes.http_latency_requests} requests per run; references: in-process ms per flow")
        p50.targets.append(Target(f"{OURS} p50 ÷ {NAIVE} per flow ≤ 1.0", p50.ratio(NAIVE), 1.0))
        p50.extra["percentiles_ms"] = {str(p): percentile(pooled, p) for p in (50, 90, 95, 99, 99.9, 100)}
        p50.extra["latencies_ms"] = pooled
        self.rows.extend([p50, p99])

    def _http_rate(self, name: str, metric: str, server: http.Server, load: http.LoadGenerator, spec: http.Load,
                   refs: dict[str, Figure], aim: float) -> None:
        case = self.case(name)
        row = Row(case, metric)
        repeats = self._http_repeats
        bar = self.progress.add_task(case.title, total=repeats)
        server_cpu, load_cpu = [], []
        for _ in range(repeats):
            result = load.run(server, spec)
            _check(result, name)
            row.figure(OURS).add(result.per_second)
            server_cpu.append(result.server_cpu)
            load_cpu.append(result.load_cpu)
            self.progress.advance(bar)
        for engine, figure in refs.items():
            row.figures[engine] = figure
        row.targets.append(Target(f"≥ {aim:,.0f} {metric} (aim)", row.figure(OURS).median, aim, at_most=False))
        row.extra.update({"server_cpu_cores": server_cpu, "load_cpu_busiest_process": load_cpu,
                          "load_processes": len(http._split(spec.clients, self.sizes.clients_per_load_process))})
        row.notes.append(f"server CPU up to {max(server_cpu):.2f} cores, busiest load process up to {max(load_cpu):.0%} "
                         "of a core; server at its defaults (at most 10 tasks at once); references in-process at the "
                         "same concurrency")
        self.rows.append(row)

    # -- peak memory, each in a fresh process ----------------------------------------------

    async def _llm(self) -> None:
        case = self.case("llm-chat")
        bar = self.progress.add_task(case.title, total=1)
        figures = await llm.measure(self.sizes.llm_calls)
        row = Row(case, "ms/call")
        row.figures[OURS], row.figures[FLOOR] = figures["ours"], figures["floor"]
        row.targets.append(Target("overhead ≤ 1 ms per call (median)", figures["ours"].median, 1.0))
        row.notes.append("node run (validation, request, guarded session, parse, pricing) minus the stand-in's "
                         "handler time; floor = a bare session.post of the same body, same subtraction")
        self.progress.advance(bar)
        self.rows.append(row)

    async def _media(self) -> None:
        sizes, workdir = self.sizes, self.workdir / "media"
        bar = self.progress.add_task("image.* on Pillow", total=2)
        if self.wants("image-resize"):
            (workdir / "resize").mkdir(parents=True)
            figures = await media.measure_resize(sizes.media_runs, workdir / "resize", sizes.media_size)
            row = Row(self.case("image-resize"), "ms")
            row.figures[OURS], row.figures[FLOOR] = figures["ours"], figures["floor"]
            row.targets.append(Target("≤ 1.3× Pillow called directly (median)", row.ratio(FLOOR), 1.3))
            row.notes.append("node as the executor drives it (params, store read, thread, store write) vs open/"
                             "resize/encode in the same process; runs alternate")
            self.rows.append(row)
        self.progress.advance(bar)
        if self.wants("image-pipeline"):
            (workdir / "pipeline").mkdir(parents=True)
            found = await media.measure_pipeline(sizes.media_tasks, workdir / "pipeline", size=sizes.media_size)
            row = Row(self.case("image-pipeline"), "s")
            row.figure(OURS).add(found["wall_s"])
            row.figure(FLOOR).add(found["direct"]["wall_s"])
            row.extra.update({"cores used": round(found["cores"], 2), "floor cores used": round(found["direct"]["cores"], 2)})
            row.targets.append(Target("uses both cores (CPU s ÷ wall s ≥ 1.6)", found["cores"], 1.6, at_most=False))
            row.notes.append("real scheduler and executor at MAX_CONCURRENT_JOBS 10; floor = the same Pillow work on 10 "
                             "plain threads; cores = the process's CPU seconds ÷ wall seconds")
            self.rows.append(row)
        self.progress.advance(bar)

    async def _reuse(self) -> None:
        """Issue 10's cases (bench/reuse.py), in their own databases."""
        workdir = self.workdir / "reuse"
        workdir.mkdir()
        bar = self.progress.add_task("output cache, plan, map", total=3)
        if self.wants("cache-flow") or self.wants("cache-hit"):
            found = await reuse.measure_cache(self.sizes, workdir, *(self._case_of("cache-flow", "cache-hit")))
            self.rows += [row for row in found if self.wants(row.case.name)]
        self.progress.advance(bar)
        if self.wants("plan"):
            self.rows.append(await reuse.measure_plan(self.sizes, workdir, self.case("plan")))
        if self.wants("plan-http"):
            self.rows.append(await reuse.measure_plan_http(self.sizes, workdir, self.case("plan-http")))
        self.progress.advance(bar)
        if self.wants("map"):
            self.rows.append(await reuse.measure_map(self.sizes, workdir, self.case("map")))
        self.progress.advance(bar)

    async def _callbacks(self) -> None:
        """Issue 12's callback delivery rate (bench/callbacks.py), in its own database."""
        workdir = self.workdir / "callbacks"
        workdir.mkdir()
        bar = self.progress.add_task("callbacks", total=1)
        self.rows.append(await callbacks.measure(self.sizes, workdir, self.case("callbacks")))
        self.progress.advance(bar)

    def _events(self) -> None:
        """Issue 12's event cases (bench/events.py): the hub with nobody listening, 1,000 open streams."""
        workdir = self.workdir / "events"
        workdir.mkdir()
        bar = self.progress.add_task("events: hub overhead, open streams", total=2)
        if self.wants("events-overhead"):
            self.rows.append(asyncio.run(events.overhead_row(self.sizes, workdir, self.case("events-overhead"))))
        self.progress.advance(bar)
        if self.wants("events-streams"):
            self.rows.append(events.streams_row(self.sizes, workdir / "streams", self.logs,
                                                self.case("events-streams")))
        self.progress.advance(bar)

    def _scale(self) -> None:
        """Issue 11's cases: PostgreSQL (bench/postgres.py), processes and workers (bench/scale.py)."""
        workdir = self.workdir / "scale"
        workdir.mkdir()
        bar = self.progress.add_task("PostgreSQL, DBOS, workers, processes", total=4)
        if self.wants("pg-chain") or self.wants("pg-dbos"):
            found = asyncio.run(postgres.measure_chain(self.sizes, *self._case_of("pg-chain", "pg-dbos")))
            self.rows += [row for row in found if self.wants(row.case.name)]
        self.progress.advance(bar)
        if self.wants("workers") or self.wants("enqueue-start"):
            found = scale.measure_workers(self.sizes, workdir, self.logs, *self._case_of("workers", "enqueue-start"))
            self.rows += [row for row in found if self.wants(row.case.name)]
        self.progress.advance(bar)
        for engine in ("sqlite", "pg"):
            if self.wants(f"processes-{engine}"):
                self.rows.append(scale.measure_processes(self.sizes, workdir, self.logs,
                                                         self.case(f"processes-{engine}"), engine))
            self.progress.advance(bar)

    def _case_of(self, *names: str) -> list[Case]:
        """The cases named, selected or not (one measurement feeds rows of several cases)."""
        every = {c.name: c for c in cases.cases(self.sizes)}
        return [every[name] for name in names]

    async def _files(self) -> None:
        bar = self.progress.add_task("files over loopback", total=1)
        (self.workdir / "files").mkdir()
        found = await files.measure(self.sizes.files_mib, self.workdir / "files")
        row = Row(self.case("files-transfer"), "MB/s")
        row.figure(OURS).add(found["upload_mb_s"])
        row.figure(FLOOR).add(found["floor_mb_s"])
        row.extra.update({"download MB/s": found["download_mb_s"], "RSS growth MiB": found["rss_growth_mib"]})
        row.targets += [Target("upload ≥ 300 MB/s", found["upload_mb_s"], 300, at_most=False),
                        Target("download ≥ 300 MB/s", found["download_mb_s"], 300, at_most=False),
                        Target("RSS growth < 50 MiB (server and client together)", found["rss_growth_mib"], 50)]
        row.notes.append("ours = POST /api/v1/files streamed (hash, write, fsync, rename); floor = the same bytes "
                         "hashed and written by one thread, no HTTP")
        self.rows.append(row)
        self.progress.advance(bar)

    def _rss(self) -> None:
        sizes = self.sizes
        plan = []
        if self.wants("rss-task"):
            plan.append(("rss-task", sizes.rss_nodes, {OURS: "ours-task", NAIVE: "naive-task", FLOOR: "floor-task"},
                         250.0))
        if self.wants("rss-queued"):
            plan.append(("rss-queued", sizes.rss_queued, {OURS: "ours-queued", NAIVE: "naive-queued"}, 300.0))
        for name, n, modes, limit in plan:
            case = self.case(name)
            row = Row(case, "MB")
            bar = self.progress.add_task(case.title, total=sizes.rss_repeats * len(modes))
            for _ in range(sizes.rss_repeats):
                for engine, mode in modes.items():
                    found = _rss_process(mode, n, self.workdir / f"rss-{mode}-{time.monotonic_ns()}")
                    row.figure(engine).add(found["peak_mb"])
                    row.extra.setdefault(f"{engine} baseline MB", []).append(found["baseline_mb"])
                    row.extra.setdefault(f"{engine} seconds", []).append(found["seconds"])
                    self.progress.advance(bar)
            row.targets.append(Target(f"peak RSS < {limit:.0f} MB", row.figure(OURS).median, limit))
            row.notes.append("each run in a fresh process; baseline = peak before the work (imports, database open)")
            self.rows.append(row)


async def _rate(call: RunFlow, clients: int, seconds: float, repeats: int) -> Figure:
    """Calls per second completed by ``clients`` concurrent loops, in a window after a warm-up."""
    figure = Figure("per s", higher_is_better=True)
    warmup = min(0.5, seconds / 2)
    for _ in range(repeats):
        start = time.perf_counter()
        counts = await asyncio.gather(*(_count_calls(call, start + warmup, start + warmup + seconds)
                                        for _ in range(clients)))
        figure.add(sum(counts) / seconds)
    return figure


async def _count_calls(call: RunFlow, opens: float, closes: float) -> int:
    """Call back to back until ``closes``; how many calls ended inside ``[opens, closes]``."""
    counted = 0
    for _ in range(http.MAX_REQUESTS_PER_CLIENT):
        if time.perf_counter() >= closes:
            break
        await call()
        if opens <= time.perf_counter() <= closes:
            counted += 1
    return counted


def _check(result: http.LoadResult, name: str) -> None:
    if result.errors:
        raise RuntimeError(f"{name}: {result.errors} wrong answers, the first: {result.first_error}")
    if not result.completed:
        raise RuntimeError(f"{name}: no request completed in the window")


def _rss_process(mode: str, n: int, workdir: Path) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-m", "bench.rss", mode, str(n), str(workdir)], capture_output=True,
                          text=True, timeout=900, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"bench.rss {mode} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def prefect_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("prefect") is not None


def make_progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=Console(stderr=True), transient=False)
