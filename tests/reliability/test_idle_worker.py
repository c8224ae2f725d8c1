"""An idle worker on PostgreSQL costs the database little and wakes at once (SPEC §10): at most one
query a second while idle, and new work starts long before its 2 s fallback poll.

Real processes on a database of the machine's PostgreSQL. The idle worker's queries are counted
on the wire (``statement_counter.py``: a relay between it and the server that notes every
statement it runs), so the server's own transactions (connection start-up, statistics) do not count.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest

from tests import pg
from tests.reliability.cluster import deployed, execute, put_flow, wait_ended, wait_ready
from tests.reliability.statement_counter import StatementCounter

pytestmark = pytest.mark.postgres

IDLE_WINDOW_S = 15.0  # polls every 2 s and sweeps every ~6 s: at most 14 queries in 15 s, 8 + 3 x 2
TRANSACTION_CONTROL = {"BEGIN", "COMMIT", "ROLLBACK"}
EXECUTES = 50
FLOW = {"id": "one", "nodes": [{"id": "n", "type": "test.record", "settings": {"sleep_s": 0.0}}],
        "defaults": {"start_node_id": "n", "end_node_id": "n"}}


@pytest.mark.timeout(150)
async def test_an_idle_worker_makes_at_most_one_query_a_second(tmp_path: Path) -> None:
    async with deployed(tmp_path, lease_s=10.0) as deployment:
        # The worker reaches the database through the counting relay; nothing else does.
        host, port = pg.PG_HOST.split(":")
        counter = StatementCounter(host, int(port))
        await counter.start()
        try:
            relayed = deployment.database_url.replace(pg.PG_HOST, f"127.0.0.1:{counter.port}")
            # Alone: no API process, nothing queued. The last --db counts. Waited for on a thread: the
            # relay runs on this loop.
            await asyncio.to_thread(wait_ready, deployment.start_worker("--db", relayed, wait=False))
            await asyncio.sleep(3.0)  # past its start (migrations, the first recovery sweep)
            began = time.monotonic()
            await asyncio.sleep(IDLE_WINDOW_S)
            window = time.monotonic() - began
            sent = counter.between(began, began + window)
        finally:
            await counter.close()
    # BEGIN and COMMIT are counted with the statements they wrap, as a driver's cursor count would.
    queries = [text for text in sent if text.strip().upper().rstrip(";") not in TRANSACTION_CONTROL]
    print(f"\nidle worker: {len(queries)} queries ({len(sent)} statements with BEGIN/COMMIT) in {window:.1f}s "
          f"({len(queries) / window:.2f}/s): {dict(Counter(sent))}")
    assert len(queries) <= window, f"{len(queries)} queries in {window:.1f}s from one idle worker: {Counter(sent)}"


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.mark.timeout(180)
async def test_new_work_wakes_an_idle_worker_at_once(tmp_path: Path) -> None:
    async with deployed(tmp_path, lease_s=10.0) as deployment:
        deployment.start_api()
        deployment.start_worker()
        latencies = []
        async with deployment.session() as http:
            await put_flow(http, FLOW)
            for n in range(EXECUTES):
                # Idle in between, at changing phases of its 2 s fallback poll.
                await asyncio.sleep(0.05 + (n % 7) * 0.04)
                task_id = await execute(http, "one")
                # Polled, not ?wait=: an API-only process re-reads a waited task once a poll interval.
                [task] = (await wait_ended(http, [task_id], timeout=10, interval=0.02)).values()
                assert task["status_name"] == "succeeded", (task, deployment.describe())
                latencies.append((_at(task["nodes"]["n"]["started"]) - _at(task["created"])).total_seconds())
    p50, p95 = statistics.median(latencies), statistics.quantiles(latencies, n=20)[-1]
    print(f"\nwake-up: created -> first node started over {EXECUTES} executes: p50 {p50 * 1000:.1f} ms, "
          f"p95 {p95 * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms")
    assert p95 < 1.0, sorted(latencies)  # far under the 2 s poll: only a notification does that
