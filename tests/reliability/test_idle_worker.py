"""An idle worker on PostgreSQL costs the database little and wakes at once (SPEC §10): at most one
query a second while idle, and new work starts long before its 2 s fallback poll.

Real processes on a database of the machine's PostgreSQL. The query count is the database's
``xact_commit`` (``pg_stat_database``; ``pg_stat_statements`` is not loaded on a stock server):
every statement a worker sends outside a transaction block is one commit (a transaction of
several statements is one too: the count is a lower bound when the worker batches them), so the
count over a window, less the measuring connections' own, is what the worker made.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from datetime import datetime
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import pytest

from tests.reliability.cluster import asyncpg_url, deployed, execute, put_flow, wait_ended

pytestmark = pytest.mark.postgres

IDLE_WINDOW_S = 10.0
EXECUTES = 50
FLOW = {"id": "one", "nodes": [{"id": "n", "type": "test.record", "settings": {"sleep_s": 0.0}}],
        "defaults": {"start_node_id": "n", "end_node_id": "n"}}


async def commits(url: str) -> int:
    """The database's committed transactions so far, read on a connection of its own (one commit)."""
    conn = await asyncpg.connect(asyncpg_url(url))
    try:
        return int(await conn.fetchval("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"))
    finally:
        await conn.close()  # a backend's counts reach pg_stat_database at the latest when it exits


@pytest.mark.timeout(90)
async def test_an_idle_worker_makes_at_most_one_query_a_second(tmp_path: Path) -> None:
    async with deployed(tmp_path, lease_s=10.0) as deployment:
        deployment.start_worker()  # alone: no API process, nothing queued
        await asyncio.sleep(3.0)  # past its start (migrations, the first recovery sweep)
        # Two reads back to back say what one read costs (its connection's start-up is a
        # transaction too); the worker's own share of that instant is noise far below one query.
        calibration = await commits(deployment.database_url)
        first = await commits(deployment.database_url)
        began = time.monotonic()
        await asyncio.sleep(IDLE_WINDOW_S)
        last = await commits(deployment.database_url)
        window = time.monotonic() - began
    queries = last - first - (first - calibration)
    print(f"\nidle worker: {queries} transactions in {window:.1f}s ({queries / window:.2f}/s)")
    assert queries <= window, f"{queries} transactions in {window:.1f}s from one idle worker"


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.mark.timeout(120)
async def test_new_work_wakes_an_idle_worker_at_once(tmp_path: Path) -> None:
    async with deployed(tmp_path, lease_s=10.0) as deployment:
        deployment.start_api()
        deployment.start_worker()
        latencies = []
        async with deployment.session() as http:
            await put_flow(http, FLOW)
            for n in range(EXECUTES):
                # Idle in between, at changing phases of its 2 s fallback poll.
                await asyncio.sleep(0.1 + (n % 7) * 0.07)
                task_id = await execute(http, "one")
                # Polled, not ?wait=: an API-only process re-reads a waited task once a poll interval.
                [task] = (await wait_ended(http, [task_id], timeout=10, interval=0.02)).values()
                assert task["status_name"] == "succeeded", (task, deployment.describe())
                latencies.append((_at(task["nodes"]["n"]["started"]) - _at(task["created"])).total_seconds())
    p50, p95 = statistics.median(latencies), statistics.quantiles(latencies, n=20)[-1]
    print(f"\nwake-up: created -> first node started over {EXECUTES} executes: p50 {p50 * 1000:.1f} ms, "
          f"p95 {p95 * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms")
    assert p95 < 1.0, sorted(latencies)  # far under the 2 s poll: only a notification does that
