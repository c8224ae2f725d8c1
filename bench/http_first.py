"""A first HTTP measurement: submit→succeeded latency of a 3-node flow, and tasks/s with 16 clients.

Runs `graph-runtime serve` in its own process on a fresh SQLite file, then drives it over
loopback. Usage: ``python bench/http_first.py [--clients 16] [--seconds 10] [--latency-runs 100]``.
The full benchmark suite (references, charts) is a later issue; this prints a small table.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
BODY = {"start_node_id": "SYnn-start", "end_node_id": "y5iI-end", "result_node_id": "y5iI-end",
        "node_settings": {"SYnn-start": {"data": {"image_url": "https://example.com/a.jpg", "style": "long"}}}}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(tmp: Path, port: int) -> tuple[subprocess.Popen[bytes], str]:
    db = f"sqlite+aiosqlite:///{tmp / 'bench.db'}"
    cli = [sys.executable, "-m", "http_api.cli"]
    env = {**os.environ, "GRAPH_RUNTIME_LOG_LEVEL": "WARNING"}
    out = subprocess.run([*cli, "keys", "create", "bench", "--scope", "admin", "--db", db],
                         check=True, capture_output=True, text=True, cwd=ROOT, env=env)
    token = out.stdout.strip().splitlines()[-1]
    server = subprocess.Popen([*cli, "serve", "--port", str(port), "--db", db, "--flows", str(ROOT / "sample_flows")],
                              cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return server, token


async def wait_healthy(base: str) -> None:
    deadline = time.monotonic() + 20
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(f"{base}/healthz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise RuntimeError("server did not become healthy")


async def one_run(session: aiohttp.ClientSession, url: str) -> float:
    started = time.perf_counter()
    async with session.post(url, json=BODY) as response:
        task = await response.json()
    assert task["status"] == 3, task
    return time.perf_counter() - started


async def latency(base: str, headers: dict[str, str], runs: int) -> list[float]:
    url = f"{base}/api/v1/flow/caption-image/execute?wait=30"
    async with aiohttp.ClientSession(headers=headers) as session:
        for _ in range(5):
            await one_run(session, url)
        samples = []
        for i in range(runs):
            samples.append(await one_run(session, url))
            if (i + 1) % 20 == 0:
                print(f"  latency: {i + 1}/{runs}", file=sys.stderr)
    return samples


async def throughput(base: str, headers: dict[str, str], clients: int, seconds: float) -> tuple[int, float]:
    url = f"{base}/api/v1/flow/caption-image/execute?wait=60"
    done = 0
    stop_at = time.perf_counter() + seconds

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal done
        while time.perf_counter() < stop_at:
            await one_run(session, url)
            done += 1

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(headers=headers, connector=connector) as session:
        started = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(clients)))
        elapsed = time.perf_counter() - started
    return done, elapsed


def percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--latency-runs", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        server, token = start_server(Path(tmp), port)
        base = f"http://127.0.0.1:{port}"
        headers = {"Authorization": f"Basic {token}"}
        try:
            await wait_healthy(base)
            print("measuring latency (concurrency 1, ?wait)…", file=sys.stderr)
            samples = await latency(base, headers, args.latency_runs)
            print(f"measuring throughput ({args.clients} clients, {args.seconds:g} s)…", file=sys.stderr)
            done, elapsed = await throughput(base, headers, args.clients, args.seconds)
        finally:
            server.terminate()
            server.wait(10)
    print(f"{'case':<44} value")
    print(f"{'3-node flow submit→succeeded p50 (ms)':<44} {statistics.median(samples) * 1000:.1f}")
    print(f"{'3-node flow submit→succeeded p99 (ms)':<44} {percentile(samples, 99) * 1000:.1f}")
    print(f"{'completed tasks/s, ' + str(args.clients) + ' clients':<44} {done / elapsed:.1f}  ({done} in {elapsed:.1f} s)")


if __name__ == "__main__":
    asyncio.run(main())
