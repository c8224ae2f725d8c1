"""Over HTTP: ``graph-runtime serve`` in its own process on a fresh SQLite file, and a load generator.

The load generator runs in separate processes (one per ``clients_per_load_process`` clients,
started once with ``spawn`` and reused), each an asyncio loop of raw HTTP/1.1 keep-alive
connections: a request is a prebuilt byte string and an answer is read by its Content-Length,
so a client costs a few microseconds of CPU per request. Each answer is checked (status code,
and for an execute ``"status":3``, succeeded). The server's and the generator's CPU use during
the window are reported, so a reader can see which one was the bottleneck.

Only 127.0.0.1 is ever contacted; every loop is bounded in time and in requests.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import cases

HOST = "127.0.0.1"
START_TIMEOUT_S = 30.0
MAX_REQUESTS_PER_CLIENT = 1_000_000  # a bound on every loop, besides its deadline
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRAPH_RUNTIME_")}
    env.update({"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost", "PYTHONUNBUFFERED": "1"})
    return env


@dataclass
class Server:
    """A running ``graph-runtime serve`` with an admin token and the chain flow loaded."""

    proc: subprocess.Popen[bytes]
    port: int
    token: str

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process so far (all its threads)."""
        with open(f"/proc/{self.proc.pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"http://{HOST}:{self.port}{path}", data=data, method=method,
                                     headers={"Authorization": f"Basic {self.token}", "Content-Type": "application/json"})
        with _OPENER.open(req, timeout=30) as response:
            return response.status, json.loads(response.read())


@contextmanager
def serving(workdir: Path, logs: Path, shape: cases.Shape) -> Iterator[Server]:
    """``graph-runtime serve`` on a fresh SQLite file in ``workdir`` with ``shape``'s flow; stopped on exit.

    The server runs with its defaults except ``--log-level WARNING`` (no access log line per
    request) and the output cache off (the load repeats one flow: it would time cache hits); its
    output goes to ``logs/server.log``.
    """
    logs.mkdir(parents=True, exist_ok=True)
    flows_dir = workdir / "flows"
    flows_dir.mkdir(parents=True, exist_ok=True)
    (flows_dir / f"{shape.flow_id}.json").write_text(json.dumps(shape.flow_definition()), encoding="utf-8")
    db = f"sqlite+aiosqlite:///{workdir / 'server.db'}"
    cli = [sys.executable, "-m", "http_api.cli"]
    made = subprocess.run([*cli, "keys", "create", "bench", "--scope", "admin", "--db", db], check=True,
                          capture_output=True, text=True, env=_child_env(), timeout=60)
    token = made.stdout.strip().splitlines()[-1]
    port = _free_port()
    with open(logs / "server.log", "wb") as log:
        proc = subprocess.Popen([*cli, "serve", "--host", HOST, "--port", str(port), "--db", db, "--flows",
                                 str(flows_dir), "--log-level", "WARNING",
                                 # The load repeats one flow: with the output cache on, every merge
                                 # after the first run would be a hit, and this would time the cache.
                                 "--cache-max-bytes", "0"], env=_child_env(), stdout=log,
                                stderr=subprocess.STDOUT)
    server = Server(proc, port, token)
    try:
        _wait_healthy(server, logs)
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def _wait_healthy(server: Server, logs: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"the server exited at start-up; see {logs / 'server.log'}")
        try:
            with _OPENER.open(f"http://{HOST}:{server.port}/healthz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"the server did not answer /healthz within {START_TIMEOUT_S}s; see {logs / 'server.log'}")


def execute_request(server: Server, shape: cases.Shape, wait_s: int = 60) -> bytes:
    body = b"{}"
    return (f"POST /api/v1/flow/{shape.flow_id}/execute?wait={wait_s} HTTP/1.1\r\nHost: {HOST}:{server.port}\r\n"
            f"Authorization: Basic {server.token}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def poll_request(server: Server, task_id: int) -> bytes:
    return (f"GET /api/v1/task/{task_id} HTTP/1.1\r\nHost: {HOST}:{server.port}\r\n"
            f"Authorization: Basic {server.token}\r\n\r\n").encode()


@dataclass(frozen=True)
class Load:
    """One load: ``clients`` connections sending ``request`` back to back.

    Answers completing in ``[start + warmup_s, start + warmup_s + seconds]`` are counted; a
    client stops after that window or after ``max_requests`` requests, whichever comes first.
    """

    port: int
    request: bytes
    expect_status: int
    expect_body: bytes | None
    clients: int
    seconds: float
    warmup_s: float
    max_requests: int = MAX_REQUESTS_PER_CLIENT
    keep_latencies: bool = False


@dataclass
class LoadResult:
    completed: int
    errors: int
    seconds: float  # the counting window's length (shorter if every client ran out of requests)
    latencies: list[float]
    load_cpu: float  # the busiest load process's CPU use over the run, as a fraction of one core
    server_cpu: float  # the server process's CPU use over the window (all threads), in cores
    first_error: str | None

    @property
    def per_second(self) -> float:
        return self.completed / self.seconds if self.seconds > 0 else 0.0


class LoadGenerator:
    """A pool of load processes (spawned once); ``run`` splits a load's clients among them."""

    def __init__(self, processes: int, clients_per_process: int) -> None:
        self.clients_per_process = clients_per_process
        context = multiprocessing.get_context("spawn")
        self.pool = concurrent.futures.ProcessPoolExecutor(max_workers=processes, mp_context=context)
        # Start the processes now (spawn imports take a moment), not inside a measured window.
        list(self.pool.map(_noop, range(processes)))

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def run(self, server: Server, load: Load) -> LoadResult:
        shares = _split(load.clients, self.clients_per_process)
        start_at = time.time() + 0.3
        futures = [self.pool.submit(_load_process, load, share, start_at) for share in shares]
        window_start = start_at + load.warmup_s
        time.sleep(max(0.0, window_start - time.time()))
        cpu_before = server.cpu_seconds()
        parts = [f.result(timeout=load.warmup_s + load.seconds + 120) for f in futures]
        window_end = min(time.time(), window_start + load.seconds)
        server_cpu = (server.cpu_seconds() - cpu_before) / max(1e-9, time.time() - window_start)
        latencies = [x for p in parts for x in p["latencies"]]
        errors = [p["first_error"] for p in parts if p["first_error"]]
        return LoadResult(completed=sum(p["completed"] for p in parts), errors=sum(p["errors"] for p in parts),
                          seconds=window_end - window_start, latencies=latencies,
                          load_cpu=max(p["cpu"] for p in parts), server_cpu=server_cpu,
                          first_error=errors[0] if errors else None)


def _noop(_: int) -> None:
    return None


def _split(clients: int, per_process: int) -> list[int]:
    processes = max(1, -(-clients // per_process))
    base, extra = divmod(clients, processes)
    return [base + (1 if i < extra else 0) for i in range(processes)]


def _load_process(load: Load, clients: int, start_at: float) -> dict[str, Any]:
    """Entry point of a load process: ``clients`` connections, counted in the shared window."""
    return asyncio.run(_drive(load, clients, start_at))


async def _drive(load: Load, clients: int, start_at: float) -> dict[str, Any]:
    connections = [await asyncio.open_connection(HOST, load.port) for _ in range(clients)]
    await asyncio.sleep(max(0.0, start_at - time.time()))
    window = (start_at + load.warmup_s, start_at + load.warmup_s + load.seconds)
    tally: dict[str, Any] = {"completed": 0, "errors": 0, "latencies": [], "first_error": None}
    cpu_before, wall_before = time.process_time(), time.time()
    await asyncio.gather(*(_client(load, reader, writer, window, tally) for reader, writer in connections))
    tally["cpu"] = (time.process_time() - cpu_before) / max(1e-9, time.time() - wall_before)
    for _, writer in connections:
        writer.close()
    return tally


async def _client(load: Load, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                  window: tuple[float, float], tally: dict[str, Any]) -> None:
    for _ in range(load.max_requests):
        sent = time.time()
        if sent >= window[1]:
            return
        writer.write(load.request)
        status, body = await _read_answer(reader)
        done = time.time()
        if not window[0] <= done <= window[1]:
            continue
        if status != load.expect_status or (load.expect_body is not None and load.expect_body not in body):
            tally["errors"] += 1
            tally["first_error"] = tally["first_error"] or f"{status}: {body[:300]!r}"
            continue
        tally["completed"] += 1
        if load.keep_latencies:
            tally["latencies"].append(done - sent)


async def _read_answer(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = None
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
        elif name.strip().lower() == b"transfer-encoding":
            raise RuntimeError("chunked answers are not expected from this server")
    body = await reader.readexactly(length) if length else b""
    return status, body
