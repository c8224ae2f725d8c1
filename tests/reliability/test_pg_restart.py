"""PostgreSQL stopped for 5 s under a running deployment and started again (issue 11): executes
answer 503 with ``Retry-After`` meanwhile, the processes reconnect by themselves, nothing is lost.

The test owns its cluster (``own_postgres.py``: ``initdb``/``pg_ctl`` into a temporary directory, on a
port of its own) so that stopping it disturbs nothing else. On it: ``graph-runtime serve --workers 0``
and one ``graph-runtime worker --lease-s 2``, started once and never restarted; the flow's first
node sleeps 1 s, so tasks are in the middle of running when the server goes away.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg  # type: ignore[import-untyped]
import pytest

from tests import pg
from tests.recording import read_events
from tests.reliability.cluster import Deployment, asyncpg_url, execute, put_flow, wait_ended
from tests.reliability.own_postgres import OwnPostgres

pytestmark = pytest.mark.postgres

OUTAGE_S = 5.0
FLOW = {
    "id": "slow",
    "nodes": [{"id": "a", "type": "test.record", "settings": {"sleep_s": 1.0}},
              {"id": "b", "type": "test.record", "settings": {"sleep_s": 0.05}}],
    "edges": [{"from": "a", "to": "b"}],
    "defaults": {"start_node_id": "a", "end_node_id": "b"},
}


async def create_database(server: OwnPostgres) -> str:
    conn = await asyncpg.connect(asyncpg_url(server.url))
    try:
        await conn.execute('CREATE DATABASE "graph_runtime"')
    finally:
        await conn.close()
    url = server.url.rsplit("/", 1)[0] + "/graph_runtime"
    await pg.create_schema(url)
    return url


async def execute_during_outage(http: aiohttp.ClientSession) -> tuple[int, dict[str, str], Any, float]:
    """One execute while the database is down: (status, headers, body, seconds)."""
    began = time.monotonic()
    async with http.post("/api/v1/flow/slow/execute", json={}, timeout=aiohttp.ClientTimeout(total=10)) as answer:
        body = await answer.json(content_type=None)
        return answer.status, dict(answer.headers), body, time.monotonic() - began


async def execute_retrying(http: aiohttp.ClientSession) -> tuple[int, int]:
    """An execute by a client that honours 503 + Retry-After: (task id, 503s answered first)."""
    for retries in range(30):
        async with http.post("/api/v1/flow/slow/execute", json={}) as answer:
            if answer.status != 503:
                assert answer.status == 201, await answer.text()
                return int((await answer.json())["id"]), retries
            await asyncio.sleep(float(answer.headers["Retry-After"]))
    raise AssertionError("still 503 after 30 tries")


@pytest.mark.timeout(200)
async def test_postgres_stopped_for_5s_answers_503_then_every_task_ends_without_restarting_anything(
        tmp_path: Path) -> None:
    began = time.monotonic()
    server = OwnPostgres()
    deployment: Deployment | None = None
    try:
        server.start()
        url = await create_database(server)
        deployment = Deployment(tmp_path, url, lease_s=2.0)
        api = deployment.start_api()
        worker = deployment.start_worker()
        async with deployment.session() as http:
            await put_flow(http, FLOW)
            before = [await execute(http, "slow") for _ in range(6)]
            while not any(e.kind == "start" for e in read_events(deployment.record)):
                await asyncio.sleep(0.05)

            server.stop("fast")
            stopped = time.monotonic()
            during = []
            while time.monotonic() - stopped < OUTAGE_S:
                during.append(await execute_during_outage(http))
                await asyncio.sleep(0.25)
            server.start()
            restarted = time.monotonic()

            after = [await execute_retrying(http) for _ in range(6)]
            ended = await wait_ended(http, before + [t for t, _ in after], timeout=90,
                                     describe=lambda: f"{deployment.describe()}\n--- postgres\n{server.log()}")
            recovered_s = time.monotonic() - restarted
        alive = {"api": api.proc.poll() is None, "worker": worker.proc.poll() is None}
        worker_log = worker.stderr
    finally:
        if deployment is not None:
            deployment.close()
        server.remove()

    starts = [e for e in read_events(deployment.record) if e.kind == "start"]
    print(f"\npostgres restart: {len(during)} executes during the {OUTAGE_S:.0f}s outage, statuses "
          f"{sorted({s for s, *_ in during})}, slowest {max(t for *_, t in during):.2f}s; 503s after the restart "
          f"{[r for _, r in after]}; all {len(ended)} tasks ended {recovered_s:.1f}s after the restart; "
          f"{len(starts) - 2 * len(ended)} node run(s) ran again; {time.monotonic() - began:.1f}s in all")
    assert during, "no execute was tried during the outage"
    for status, headers, body, _ in during:
        assert status == 503 and "Retry-After" in headers, (status, headers, body)
        assert isinstance(body, dict) and body["error"]["code"], body
    assert alive == {"api": True, "worker": True}, worker_log[-3000:]
    failed = {t: task["error"] for t, task in ended.items() if task["status_name"] != "succeeded"}
    assert not failed, (failed, worker_log[-4000:])
    assert {(e.task_id, e.node_id) for e in starts} == {(t, n) for t in ended for n in ("a", "b")}
