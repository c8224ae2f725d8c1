"""Task events (issue 12, SPEC §11): what the events hub costs when nobody listens, and 1,000 open streams.

``events-overhead``: the in-process 10-node chain (:class:`bench.inprocess.OurEngine`, output cache
off) with the events hub as ``open_services`` builds it, against the same executor without one
(``events=None``), on the same services and database. Rounds alternate with and without, so a
drift of the machine's speed touches both alike; the figure is the median of the per-round
ratios. Nobody subscribes: what is timed is each event's making (the task and node views), its
batch insert (one transaction per loop turn) and the flush task.

``events-streams``: a real ``graph-runtime serve`` on SQLite (:func:`bench.http.serving`). A few
long tasks run a chain of ``delay`` nodes (a built-in type: each node's ``running`` and
``succeeded`` events carry their own ``started`` and ``finished`` times). One client process
opens ``event_streams`` streams over them (bare asyncio protocols, spread evenly), and HTTP load processes run
the 10-node chain with ``?wait`` at ``http_clients[0]`` clients. Each round measures chain
throughput once with the streams open and once without (the same long tasks run in both, only
the streams differ; the order alternates). Delivery latency per event = the client's receive time
− the event's own timestamp (same machine, same clock). Everything shares the machine's two
cores: the server, the stream reader and the load processes compete, and the output says so.

``python -m bench.events count [FLOWS]``: the overhead as instructions under valgrind (which this
machine's timings are too noisy for; see :func:`count_overhead`).

Standalone: ``python -m bench.events overhead [FLOWS_PER_ROUND] [ROUNDS]`` or
``python -m bench.events streams [STREAMS] [SECONDS] [TICK_S]`` print the figures as JSON.
"""

from __future__ import annotations

import asyncio
import bisect
import dataclasses
import itertools
import json
import select
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
from datetime import datetime
from pathlib import Path
from typing import Any

from bench import cases, http
from bench.cases import Case, Sizes
from bench.figures import percentile
from bench.results import FLOOR, OURS, Row, Target
from graph_runtime.events import EVENTS_LATER_S

CHAIN = cases.Shape("deep", 10)
OVERHEAD_TARGET_PCT = 5.0
DROP_TARGET_PCT = 20.0
LATENCY_TARGET_MS = 50.0


# -- no listener: the hub's cost on the in-process chain ----------------------------------------


async def measure_overhead(flows: int = 200, rounds: int = 7, workdir: Path | None = None) -> dict[str, Any]:
    """Median ms per chain with the hub and without, and the overhead in percent (wall and CPU)."""
    # Here, not at the top: the stream reader's process imports this module and needs none of the server.
    from bench.inprocess import OurEngine
    from bench.telemetry import _figures, _round  # the same timing and figures as the telemetry case
    from http_api import heap

    with tempfile.TemporaryDirectory(prefix="graph-runtime-events-") as scratch:
        on = await OurEngine.open((workdir or Path(scratch)) / "events.db")
        # The same services, database and executor settings, built without a hub: no event is made.
        bare = dataclasses.replace(on.services.executor, events=None)
        off = OurEngine(dataclasses.replace(on.services, executor=bare))
        engines = {"off": off, "on": on}
        wall: dict[str, list[float]] = {"off": [], "on": []}
        cpu: dict[str, list[float]] = {"off": [], "on": []}
        try:
            await on.install(CHAIN)
            for engine in engines.values():
                await _round(engine, max(1, flows // 10))  # warm-up, untimed
            heap.settle()
            for index in range(rounds):
                for name in ("off", "on") if index % 2 == 0 else ("on", "off"):
                    seconds, cpu_seconds = await _round(engines[name], flows)
                    wall[name].append(seconds)
                    cpu[name].append(cpu_seconds)
            # The path really ran: a chain with the hub stored its events, one without stored none.
            with_hub, without = await on.run_flow(CHAIN), await off.run_flow(CHAIN)
            await on.services.events.flush()
            stored = len(await on.services.events.history(with_hub.id))
            if stored < CHAIN.size or await on.services.events.history(without.id):
                raise AssertionError(f"events stored: {stored} with the hub, some without it")
        finally:
            await on.close()
    return {"flows_per_round": flows, "rounds": rounds, "target_pct": OVERHEAD_TARGET_PCT, "events_per_flow": stored,
            **_figures("wall", wall["off"], wall["on"]), **_figures("cpu", cpu["off"], cpu["on"]),
            "samples_ms": {kind: {name: [round(v * 1e3, 4) for v in values] for name, values in found.items()}
                           for kind, found in (("wall", wall), ("cpu", cpu))}}



# -- the same, counted: instructions under valgrind, where timings are too noisy ------------------

COUNT_WARM = 20  # chains every counted process runs first (imports, the flow's plan, the caches)

VALGRIND_SLOWDOWN = 12
"""How much slower a chain runs under valgrind here (2026-12-01: 44 ms against 3.6 ms). What the
hub does by the clock (its events ticker, every EVENTS_LATER_S) runs that many times more often per
chain under valgrind than outside it, so the counted process's clock is slowed as much: the count
then weighs it as a chain run outside valgrind does (at 0.1 s, 40,000 instructions more a chain
were counted than it costs)."""


async def _chains(hub: bool, flows: int) -> None:
    """The counted process's work: COUNT_WARM chains, then ``flows`` more, with the hub or without."""
    from bench.inprocess import OurEngine
    from bench.telemetry import _round
    from http_api import heap

    with tempfile.TemporaryDirectory(prefix="graph-runtime-events-") as scratch:
        on = await OurEngine.open(Path(scratch) / "events.db")
        engine = on if hub else OurEngine(dataclasses.replace(
            on.services, executor=dataclasses.replace(on.services.executor, events=None)))
        try:
            await on.install(CHAIN)
            await _round(engine, COUNT_WARM)
            heap.settle()
            if flows:
                await _round(engine, flows)
        finally:
            await on.close()


def count_overhead(flows: int = 200) -> dict[str, Any]:
    """Instructions per chain with the hub and without (valgrind's cachegrind, hash seed fixed): each
    process runs COUNT_WARM chains and then 0 or ``flows`` more, and the difference over ``flows`` is a
    chain's count. Deterministic to about 1% where this 2-core VM's timings of the same code moved by
    ±5 points between runs."""
    def count(hub: bool, more: int) -> subprocess.Popen[str]:
        return subprocess.Popen(
            ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null", sys.executable,
             "-m", "bench.events", "chains", "on" if hub else "off", str(more)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            env={**http._child_env(), "PYTHONHASHSEED": "0",
                 "GRAPH_RUNTIME_EVENTS_LATER_S": str(EVENTS_LATER_S * VALGRIND_SLOWDOWN)})

    def total(proc: subprocess.Popen[str]) -> int:
        _, err = proc.communicate()
        found = [line for line in err.splitlines() if "I refs" in line or "I   refs" in line]
        if proc.returncode != 0 or not found:
            raise RuntimeError(f"valgrind failed ({proc.returncode}): {err[-500:]}")
        return int(found[-1].split(":")[1].replace(",", "").strip())

    per_flow: dict[str, float] = {}
    for hub in (True, False):  # two processes at a time: the machine's two cores
        print(f"counting {'with' if hub else 'without'} the hub (about a minute)…", file=sys.stderr, flush=True)
        short, long = count(hub, 0), count(hub, flows)
        per_flow["on" if hub else "off"] = (total(long) - total(short)) / flows
    return {"flows": flows, "instructions_per_flow": {k: round(v) for k, v in per_flow.items()},
            "overhead_pct": round(100 * (per_flow["on"] / per_flow["off"] - 1), 2), "target_pct": OVERHEAD_TARGET_PCT}


# -- 1,000 streams: chain throughput beside them, and each event's delivery latency -------------

TICKER_ID = "bench-events-ticker"
STREAM_TIMEOUT_S = 120.0
OPENING = 50  # streams the reader opens at a time (each until its first event)


def ticker_flow(ticks: int, tick_s: float) -> dict[str, Any]:
    """A long task of built-in ``delay`` nodes in a chain: a node event every ``tick_s / 2`` seconds
    (each node's ``running``, then its ``succeeded``), each carrying its own time."""
    nodes = [{"id": f"t{i}", "type": "delay", "settings": {"seconds": tick_s}} for i in range(ticks)]
    # Each passes on its predecessor's value (not its whole output: that would nest one level per node).
    edges = [{"from": f"t{i - 1}", "output": "value", "to": f"t{i}", "input": "value"} for i in range(1, ticks)]
    return {"id": TICKER_ID, "name": "bench events ticker", "nodes": nodes, "edges": edges,
            "defaults": {"start_node_id": "t0", "end_node_id": f"t{ticks - 1}"}}


@dataclasses.dataclass(frozen=True)
class StreamSizes:
    streams: int = 1000
    tasks: int = 4  # the long tasks the streams are spread over
    tick_s: float = 0.04  # each long task: a node event every 20 ms
    seconds: float = 3.0  # the throughput window
    rounds: int = 3
    clients: int = 16  # chain-10 HTTP clients
    # The long tasks outlast the window by this much: the streams' opening (many seconds, on a busy
    # machine), the load's start-up and warm-up. They are cancelled once the window is over.
    margin_s: float = 60.0

    @property
    def task_s(self) -> float:
        return self.seconds + self.margin_s

    @classmethod
    def of(cls, sizes: Sizes) -> StreamSizes:
        return cls(streams=sizes.event_streams, tasks=sizes.event_stream_tasks, tick_s=sizes.event_tick_s,
                   seconds=sizes.http_seconds, rounds=sizes.http_repeats, clients=sizes.http_clients[0],
                   margin_s=sizes.event_task_margin_s)


def measure_streams(sizes: StreamSizes, workdir: Path, logs: Path) -> dict[str, Any]:
    """chain-10 flows/s over HTTP with ``sizes.streams`` event streams open and with none, alternating;
    the latency of every live event each stream received (p50, p99, max)."""
    ticks = max(2, round(sizes.task_s / sizes.tick_s))
    flows_dir = workdir / "flows"
    flows_dir.mkdir(parents=True, exist_ok=True)
    (flows_dir / f"{TICKER_ID}.json").write_text(json.dumps(ticker_flow(ticks, sizes.tick_s)), encoding="utf-8")
    rates: dict[str, list[float]] = {"none": [], "streams": []}
    server_cpu: dict[str, list[float]] = {"none": [], "streams": []}
    load_cpu: list[float] = []
    readers: list[dict[str, Any]] = []
    outlasted = True
    with http.serving(workdir, logs, CHAIN) as server:
        load = http.LoadGenerator(len(http._split(sizes.clients, 32)), 32)
        try:
            warm = _chain_load(server, sizes.clients, min(1.0, sizes.seconds), 0.0)
            load.run(server, warm)  # the first flows load the flow and its plan
            for index in range(sizes.rounds):
                for phase in ("none", "streams") if index % 2 == 0 else ("streams", "none"):
                    reader = _StreamReader() if phase == "streams" else None  # its imports before the tasks start
                    tasks = [_start_ticker(server) for _ in range(sizes.tasks)]
                    if reader is not None:
                        reader.open(server, tasks, sizes.streams)
                    result = load.run(server, _chain_load(server, sizes.clients, sizes.seconds,
                                                          min(1.0, sizes.seconds / 2)))
                    if result.errors:  # a wrong answer is a bug; none at all in the window is a figure (0/s)
                        raise RuntimeError(f"chain load with {phase}: {result.errors} errors, {result.first_error}")
                    for task_id in tasks:
                        _, task = server.request("GET", f"/api/v1/task/{task_id}")
                        if task["status_name"] != "running":
                            outlasted = False  # the streams were not all live for the whole window
                        else:  # its stream's last event is the cancel: the next phase starts clean
                            _cancel(server, task_id)
                    rates[phase].append(result.per_second)
                    server_cpu[phase].append(result.server_cpu)
                    load_cpu.append(result.load_cpu)
                    if reader is not None:
                        readers.append(reader.finish())
                    for task_id in tasks:  # the next phase starts with no long task of this one left
                        _wait_ended(server, task_id)
        finally:
            load.close()
    latencies = [x for r in readers for x in r["latencies_ms"]]
    ratios = [b / a if a else 0.0 for a, b in zip(rates["none"], rates["streams"], strict=True)]
    return {
        "streams": sizes.streams, "tasks": sizes.tasks, "tick_s": sizes.tick_s, "clients": sizes.clients,
        "rounds": sizes.rounds, "long_tasks_outlasted_every_window": outlasted,
        "flows_per_s_none": rates["none"], "flows_per_s_streams": rates["streams"],
        "drop_pct": round((1 - statistics.median(ratios)) * 100, 2),
        "latency_ms_p50": round(percentile(latencies, 50), 2) if latencies else None,
        "latency_ms_p99": round(percentile(latencies, 99), 2) if latencies else None,
        "latency_ms_max": round(max(latencies), 2) if latencies else None, "live_events_received": len(latencies),
        "events_per_s_delivered": round(statistics.median(r["delivered_per_s"] for r in readers)),
        "streams_complete": [r["complete"] for r in readers],
        "server_cpu_cores": server_cpu, "busiest_load_process_cpu": load_cpu,
        "reader_cpu_cores": [r["cpu_cores"] for r in readers],
        "seconds_to_open_all_streams": [r["open_s"] for r in readers],
    }


def _chain_load(server: http.Server, clients: int, seconds: float, warmup_s: float) -> http.Load:
    return http.Load(server.port, http.execute_request(server, CHAIN), 201, b'"status":3', clients, seconds,
                     warmup_s=warmup_s)


def _start_ticker(server: http.Server) -> int:
    status, task = server.request("POST", f"/api/v1/flow/{TICKER_ID}/execute", {})
    if status not in (200, 201):
        raise RuntimeError(f"the long task did not start: {status} {task}")
    return int(task["id"])


def _cancel(server: http.Server, task_id: int) -> None:
    try:
        server.request("POST", f"/api/v1/task/{task_id}/cancel")
    except urllib.error.HTTPError as exc:
        if exc.code != 409:  # 409: it ended since it was read
            raise


def _wait_ended(server: http.Server, task_id: int) -> None:
    deadline = time.monotonic() + STREAM_TIMEOUT_S
    while time.monotonic() < deadline:
        _, task = server.request("GET", f"/api/v1/task/{task_id}?wait=30")
        if task["status_name"] in ("succeeded", "failed", "cancelled", "timed_out", "crashed"):
            if task["status_name"] == "failed":
                raise RuntimeError(f"the long task {task_id} ended {task['status_name']}: {task.get('error')}")
            return
    raise RuntimeError(f"the long task {task_id} did not end within {STREAM_TIMEOUT_S:.0f} s")


class _StreamReader:
    """The client process holding the streams open (``python -m bench.events read``): started, then
    waited for until every stream is open, so the load starts with all of them listening."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.events", "read"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, env=http._child_env())

    def open(self, server: http.Server, tasks: list[int], streams: int) -> None:
        order = {"port": server.port, "token": server.token, "tasks": tasks, "streams": streams}
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(order).encode())
        self.proc.stdin.close()
        line = self.proc.stdout.readline()
        self.opened = json.loads(line or b"{}")
        if self.opened.get("open") != streams:
            self.proc.kill()
            raise RuntimeError(f"the stream reader did not open its streams: {line!r}")

    def finish(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        found = {**json.loads(self.proc.stdout.readline() or b"{}"), "open_s": self.opened["open_s"]}
        if self.proc.wait(timeout=STREAM_TIMEOUT_S) != 0 or "latencies_ms" not in found:
            raise RuntimeError(f"the stream reader failed: {found}")
        return found


def read_streams(order: dict[str, Any]) -> dict[str, Any]:
    """The reader's work: ``streams`` streams spread over ``tasks``; each live node event's latency
    (receive time − its ``started`` or ``finished``), until every stream has its final event.

    The thousand readers stand for a thousand clients on other machines, whose CPU is not the
    server's: one epoll loop keeps every chunk of bytes each socket receives with its receive
    time, and all parsing (HTTP chunks, SSE frames, JSON, the order of ids) is done after the
    window. An aiohttp client reading lines took a whole core here at 36,000 events/s, asyncio
    protocols 0.8 of one at 25,000, and starved the server they were measuring."""
    tasks, count = order["tasks"], order["streams"]
    poller = select.epoll()
    sockets: dict[int, socket.socket] = {}
    received: dict[int, list[tuple[float, bytes]]] = {}
    opening: set[int] = set()  # open, their first event not received yet
    opened = 0
    waiting = list(range(count))[::-1]  # streams not opened yet, the next last

    def open_next() -> None:
        index = waiting.pop()
        conn = socket.create_connection((http.HOST, order["port"]), timeout=STREAM_TIMEOUT_S)
        conn.sendall(f"GET /api/v1/task/{tasks[index % len(tasks)]}/events HTTP/1.1\r\nHost: {http.HOST}\r\n"
                     f"Authorization: Basic {order['token']}\r\nConnection: close\r\n\r\n".encode())
        conn.setblocking(False)
        fd = conn.fileno()
        sockets[fd], received[fd] = conn, []
        opening.add(fd)
        poller.register(fd, select.EPOLLIN)

    started = time.perf_counter()
    cpu = wall = 0.0
    done: list[list[tuple[float, bytes]]] = []
    while sockets or waiting:
        # Streams open OPENING at a time (each until its first event): what is measured is
        # 1,000 streams open, not 1,000 history reads at one instant (which a server's read pool queues).
        while waiting and len(opening) < OPENING:
            open_next()
        for fd, _ in poller.poll(STREAM_TIMEOUT_S):
            data = sockets[fd].recv(1 << 16)
            if data:
                received[fd].append((time.time(), data))
                if fd in opening and b"id: " in data:
                    opening.discard(fd)
                    opened += 1
                    if opened == count:
                        print(json.dumps({"open": opened, "open_s": round(time.perf_counter() - started, 3)}),
                              flush=True)
                        cpu, wall = time.process_time(), time.perf_counter()
                continue
            poller.unregister(fd)  # the server closed it: the stream is over
            sockets.pop(fd).close()
            opening.discard(fd)
            done.append(received.pop(fd))
        if not sockets and waiting == [] and opened < count:
            print(json.dumps({"open": opened, "open_s": round(time.perf_counter() - started, 3)}), flush=True)
            break
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    latencies: list[float] = []
    stamps: dict[str, float] = {}  # one parse per timestamp text: every subscriber of a task sees the same
    complete = 0
    for chunks in done:
        complete += _read_back(chunks, latencies, stamps)
    return {"latencies_ms": latencies, "complete": complete, "cpu_cores": round(cpu / wall, 3),
            "delivered_per_s": len(latencies) / wall}


def _read_back(received: list[tuple[float, bytes]], latencies: list[float], stamps: dict[str, float]) -> bool:
    """Parse one stream's bytes: add each live node event's latency (its bytes' receive time − its
    own ``started``/``finished``; events older than the stream are its history) to ``latencies``;
    whether the stream ended with its task's final event. Ids must run 1, 2, … with no gap."""
    raw = b"".join(data for _, data in received)
    ends = list(itertools.accumulate(len(data) for _, data in received))  # each chunk's end offset

    def arrived(offset: int) -> float:  # when the byte at ``offset`` came
        return received[bisect.bisect_right(ends, offset)][0]

    head_end = raw.find(b"\r\n\r\n")
    if head_end < 0 or not raw.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"an event stream was refused: {raw[:200]!r}")
    since = received[0][0]
    # The body's HTTP/1.1 chunks: (payload, the raw offset of its last byte).
    pieces: list[tuple[bytes, int]] = []
    at = head_end + 4
    while True:
        line_end = raw.find(b"\r\n", at)
        if line_end < 0:
            raise RuntimeError("an event stream ended mid-chunk")
        size = int(raw[at:line_end], 16)
        if size == 0:
            break
        pieces.append((raw[line_end + 2:line_end + 2 + size], line_end + 1 + size))
        at = line_end + 4 + size
    expected, final, pending = 1, False, b""
    for payload, last_byte in pieces:
        pending += payload
        *frames, pending = pending.split(b"\n\n")
        when = arrived(last_byte)  # a frame is received when its last byte is
        for frame in frames:
            fields = dict(line.split(b": ", 1) for line in frame.split(b"\n") if b": " in line and line[:1] != b":")
            if b"id" not in fields:
                continue  # the retry hint, a keep-alive
            if int(fields[b"id"]) != expected:
                raise RuntimeError(f"event {fields[b'id']!r} where {expected} was due")
            expected += 1
            data = json.loads(fields[b"data"])
            if "node_id" in data:
                text = data.get("finished") or data.get("started")
                if text:
                    stamp = stamps.get(text)
                    if stamp is None:
                        stamp = stamps[text] = datetime.fromisoformat(text).timestamp()
                    if stamp >= since:
                        latencies.append((when - stamp) * 1e3)
            elif data.get("status_name") in ("succeeded", "failed", "cancelled", "timed_out", "crashed"):
                final = True
    return final

# -- the suite's rows ---------------------------------------------------------------------------


async def overhead_row(sizes: Sizes, workdir: Path, case: Case) -> Row:
    found = await measure_overhead(sizes.events_flows, max(3, sizes.repeats), workdir)
    row = Row(case, "ms/flow", extra={k: v for k, v in found.items() if k != "samples_ms"})
    row.figure(OURS).samples = found["samples_ms"]["wall"]["on"]
    row.figure(FLOOR).samples = found["samples_ms"]["wall"]["off"]
    row.targets.append(Target(f"the hub adds ≤ {OVERHEAD_TARGET_PCT:g}% wall time (median of per-round ratios)",
                              found["wall_overhead_pct"], OVERHEAD_TARGET_PCT))
    row.targets.append(Target(f"the hub adds ≤ {OVERHEAD_TARGET_PCT:g}% CPU time (median of per-round ratios)",
                              found["cpu_overhead_pct"], OVERHEAD_TARGET_PCT))
    row.notes.append(f"ours: the in-process chain with the events hub as open_services builds it, nobody listening "
                     f"({found['events_per_flow']} events stored per flow); floor: the same services and executor with "
                     f"events=None; {found['flows_per_round']} flows per round, rounds alternating, SQLite")
    return row


def streams_row(sizes: Sizes, workdir: Path, logs: Path, case: Case) -> Row:
    found = measure_streams(StreamSizes.of(sizes), workdir, logs)
    row = Row(case, "flows/s", extra=found)
    row.figure(OURS).samples = found["flows_per_s_streams"]
    row.figure(FLOOR).samples = found["flows_per_s_none"]
    row.targets.append(Target(f"chain flows/s drop ≤ {DROP_TARGET_PCT:g}% with the streams open (median of "
                              "per-round ratios)", found["drop_pct"], DROP_TARGET_PCT))
    row.targets.append(Target(f"event delivery p99 ≤ {LATENCY_TARGET_MS:g} ms", found["latency_ms_p99"],
                              LATENCY_TARGET_MS))
    row.notes.append(f"ours: {found['streams']} GET …/events streams over {found['tasks']} long tasks (a node event every "
                     f"{found['tick_s'] * 500:g} ms each), read by one client process (bare asyncio protocols, parsed "
                     "after the window); floor: the same long "
                     f"tasks, no stream; {found['clients']} HTTP clients run deep-10 with ?wait; serve on SQLite; the "
                     "server, the stream reader and the load processes share the machine's cores; latency = receive "
                     "time − the event's own started/finished")
    return row


def main(argv: list[str]) -> int:
    if argv and argv[0] == "read":  # the stream reader's process (see _StreamReader)
        try:
            found = read_streams(json.loads(sys.stdin.read()))
        except Exception as exc:  # the bench process shows why, with the rest of its output
            print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
            return 1
        print(json.dumps(found), flush=True)
        return 0
    if argv and argv[0] == "chains":  # a counted process (see count_overhead)
        asyncio.run(_chains(argv[1] == "on", int(argv[2])))
        return 0
    if argv and argv[0] == "count":
        print(json.dumps(count_overhead(int(argv[1]) if len(argv) > 1 else 200), indent=2))
        return 0
    if argv and argv[0] == "overhead":
        flows = int(argv[1]) if len(argv) > 1 else 200
        rounds = int(argv[2]) if len(argv) > 2 else 7
        print(json.dumps(asyncio.run(measure_overhead(flows, rounds)), indent=2))
        return 0
    if argv and argv[0] == "streams":
        sizes = StreamSizes(streams=int(argv[1]) if len(argv) > 1 else 1000,
                            seconds=float(argv[2]) if len(argv) > 2 else 3.0,
                            tick_s=float(argv[3]) if len(argv) > 3 else StreamSizes.tick_s)
        with tempfile.TemporaryDirectory(prefix="graph-runtime-events-") as scratch:
            found = measure_streams(sizes, Path(scratch), Path(scratch) / "logs")
        print(json.dumps(found, indent=2))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
