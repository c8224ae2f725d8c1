"""On PostgreSQL: our 10-node chain with one worker, a naive asyncpg durable floor, and DBOS as a peer.

- ``NaivePg``: the floor (``references.Floor``) plus one asyncpg statement, each its own
  transaction and commit, per state change — the task inserted, each node marked running, each
  node marked succeeded with its output, the task finished — each awaited before the node's
  output is published. What the least durable engine on PostgreSQL pays.
- ours: ``OurEngine`` opened on a PostgreSQL database (the task created running here, as
  ``graph-runtime run`` creates it, then executed: every node's start and result committed
  before its successors start), as on SQLite.
- bare commits: the fewest a chain can make under SPEC §4 (its task, then each node's result),
  as autocommitted one-row inserts and nothing else: DBOS's time over theirs is the most any
  engine keeping §4 could beat DBOS by on this server.
- DBOS (``bench/dbos_peer.py``, in its own process: DBOS is a process-wide singleton with
  background threads): a workflow of ten steps, each merging its input as our nodes do, on its
  own database of the same server.

Every database is made for the run (``gr_bench_<hex>``) and dropped after it.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg  # type: ignore[import-untyped]

from bench import references
from bench.cases import Case, Shape, Sizes
from bench.figures import Figure, percentile
from bench.inprocess import OurEngine
from bench.results import NAIVE, OURS, Row, Target
from bench.reuse import alternate
from http_api import heap
from http_api.app import open_services
from http_api.settings import Settings
from tests import pg

DBOS = "DBOS"
LEAST = "bare commits"
"""A reference: the fewest commits a chain of N nodes can make under SPEC §4 (N + 1: its task, then
each node's result, committed before its successors start), as bare autocommitted inserts."""
_SCHEMA = (
    "CREATE TABLE task (id BIGSERIAL PRIMARY KEY, flow TEXT NOT NULL, status TEXT NOT NULL,"
    " created DOUBLE PRECISION NOT NULL, finished DOUBLE PRECISION, result TEXT)",
    "CREATE TABLE node_run (task_id BIGINT NOT NULL, node_id TEXT NOT NULL, status TEXT NOT NULL,"
    " started DOUBLE PRECISION, finished DOUBLE PRECISION, output TEXT, PRIMARY KEY (task_id, node_id))",
    "CREATE TABLE bare_commit (id BIGSERIAL PRIMARY KEY, at DOUBLE PRECISION NOT NULL)",
)


async def server_user() -> str:
    """The trust-auth user of the machine's PostgreSQL; raises when none answers."""
    user, why = await pg.find_user()
    if user is None:
        raise RuntimeError(f"no PostgreSQL at {pg.PG_HOST}: {why}")
    return user


@asynccontextmanager
async def database(*, schema: bool) -> AsyncIterator[str]:
    """A throwaway database's ``postgresql+asyncpg://`` URL (with our schema when ``schema``); dropped after."""
    user = await server_user()
    if schema:
        url = await pg.create_database(user)
    else:
        name = f"gr_bench_{secrets.token_hex(6)}"
        await pg.admin(user, f'CREATE DATABASE "{name}"')
        url = f"postgresql+asyncpg://{user}@{pg.PG_HOST}/{name}"
    try:
        yield url
    finally:
        await pg.drop_database(url)


def plain_url(url: str) -> str:
    """The same database for asyncpg, psycopg and DBOS: ``postgresql://``."""
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


class NaivePg(references.Floor):
    """The floor plus one autocommitted asyncpg statement per state change."""

    name = "naive durable (asyncpg)"

    def __init__(self, shape: Shape, conn: asyncpg.Connection) -> None:
        super().__init__(shape.graph())
        self.conn = conn
        self.flow = shape.flow_id

    async def task_started(self) -> int:
        return int(await self.conn.fetchval("INSERT INTO task (flow, status, created) VALUES ($1, 'running', $2)"
                                            " RETURNING id", self.flow, time.time()))

    async def task_finished(self, task_id: int, result: dict[str, Any]) -> None:
        await self.conn.execute("UPDATE task SET status = 'succeeded', finished = $1, result = $2 WHERE id = $3",
                                time.time(), json.dumps(result), task_id)

    async def node_started(self, task_id: int, node_id: str) -> None:
        await self.conn.execute("INSERT INTO node_run (task_id, node_id, status, started) VALUES ($1, $2, 'running', $3)",
                                task_id, node_id, time.time())

    async def node_finished(self, task_id: int, node_id: str, output: dict[str, Any]) -> None:
        await self.conn.execute("UPDATE node_run SET status = 'succeeded', finished = $1, output = $2"
                                " WHERE task_id = $3 AND node_id = $4", time.time(), json.dumps(output), task_id, node_id)


async def open_ours(url: str) -> OurEngine:
    """Our engine on ``url``, as ``OurEngine.open`` on SQLite: no flows directory, the output cache off."""
    settings = Settings(database_url=url, flows_dir=None, log_level="WARNING", cache_max_bytes=0)
    services = await open_services(settings)
    heap.settle()
    return OurEngine(services)


async def measure_chain(sizes: Sizes, chain_case: Case, dbos_case: Case) -> list[Row]:
    """Our chain and the asyncpg floor alternating, then DBOS's workflow; ms per flow."""
    shape = Shape("deep", sizes.chain)
    flows = max(1, sizes.sequential_flows // 5)
    async with database(schema=True) as ours_url, database(schema=False) as floor_url:
        ours = await open_ours(ours_url)
        conn = await asyncpg.connect(plain_url(floor_url))
        try:
            for statement in _SCHEMA:
                await conn.execute(statement)
            await ours.install(shape)
            naive = NaivePg(shape, conn)

            async def run_naive() -> None:
                references.check_result(await naive.run_flow())

            async def least_commits() -> None:  # what SPEC §4 cannot do without, and nothing else
                for _ in range(sizes.chain + 1):
                    await conn.execute("INSERT INTO bare_commit (at) VALUES ($1)", time.time())

            wall, cpu = await alternate({OURS: lambda: ours.run_flow(shape), NAIVE: run_naive, LEAST: least_commits},
                                        sizes.repeats, flows, 1e3, "ms/flow")
        finally:
            await conn.close()
            await ours.close()
    async with database(schema=False) as dbos_url:
        dbos = run_dbos(plain_url(dbos_url), sizes.chain, flows, sizes.repeats)
    chain_row = Row(chain_case, "ms/flow", figures={OURS: wall[OURS], NAIVE: wall[NAIVE]},
                    extra={"CPU ms/flow": {name: f.samples for name, f in cpu.items()}, "flows per run": flows})
    chain_row.targets.append(Target(f"{OURS} ÷ asyncpg floor ≤ 1.0", chain_row.ratio(NAIVE), 1.0))
    chain_row.notes.append(f"PostgreSQL {pg.PG_HOST}, one worker in process; naive durable = asyncpg, one statement "
                           f"and commit per state change (task insert, node running, node succeeded + output, task "
                           f"end); {flows} sequential flows per run, runs alternating")
    dbos_row = Row(dbos_case, "ms/flow", figures={OURS: wall[OURS], NAIVE: wall[NAIVE]})
    value = None
    if isinstance(dbos, Figure):
        dbos_row.figures[DBOS] = dbos
        ours_ms = wall[OURS].median
        value = dbos.median / ours_ms if dbos.median and ours_ms else None
        dbos_row.notes.append(f"{DBOS} {dbos_version()}: @DBOS.workflow of {sizes.chain} @DBOS.step calls (each merges "
                              f"its input), its own database on the same server, own process; {DBOS} "
                              f"{dbos.median or 0:.2f} ms/flow (median of {len(dbos.samples)} runs of {flows})")
    else:
        dbos_row.notes.append(f"{DBOS}: {dbos}")
    dbos_row.targets.append(Target(f"{DBOS} ÷ {OURS} ≥ 10 (per workflow)", value, 10.0, at_most=False))
    least = wall[LEAST].median
    if isinstance(dbos, Figure) and dbos.median and least:
        # The ceiling of the ratio for any engine that commits each node's result before its
        # successors start (SPEC §4): DBOS's time over those commits alone, with no work at all.
        dbos_row.extra["ceiling under SPEC §4"] = round(dbos.median / least, 2)
        dbos_row.notes.append(f"SPEC §4 needs {sizes.chain + 1} commits a chain (the task, then each node's result before "
                              f"its successors): {sizes.chain + 1} bare autocommitted inserts took {least:.2f} ms here "
                              f"(alternating with ours and the floor; {DBOS} ran just after), so "
                              f"no engine keeping §4 can be more than {dbos.median / least:.1f}× faster than {DBOS} on "
                              f"this server")
    return [chain_row, dbos_row]


def dbos_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("dbos")
    except PackageNotFoundError:
        return "not installed"


def run_dbos(url: str, steps: int, flows: int, repeats: int) -> Figure | str:
    """DBOS's ms per workflow, or why it did not run."""
    import importlib.util

    if importlib.util.find_spec("dbos") is None:
        return "not installed (pip install -e '.[bench]')"
    done = subprocess.run([sys.executable, "-m", "bench.dbos_peer", url, str(steps), str(flows), str(repeats)],
                          capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        return f"exited with code {done.returncode}: {done.stderr[-500:]}"
    return Figure("ms/flow", json.loads(done.stdout.strip().splitlines()[-1])["ms_per_flow"])


async def notify_latencies(url: str, samples: int) -> list[float]:
    """ms from a NOTIFY's commit on one connection to its delivery on another (LISTEN): the floor of a
    wake-up on PostgreSQL."""
    listener, sender = await asyncpg.connect(plain_url(url)), await asyncpg.connect(plain_url(url))
    arrived: asyncio.Queue[float] = asyncio.Queue()
    await listener.add_listener("bench_wake", lambda *_: arrived.put_nowait(time.perf_counter()))
    found = []
    try:
        for _ in range(samples):
            sent = time.perf_counter()
            await sender.execute("NOTIFY bench_wake")
            found.append((await asyncio.wait_for(arrived.get(), 5) - sent) * 1e3)
            await asyncio.sleep(0.01)
    finally:
        await listener.close()
        await sender.close()
    return found


def p95(values: list[float]) -> float:
    return percentile(values, 95)

