"""A deployment as a user runs one: an API process (``graph-runtime serve --workers 0``) and
``graph-runtime worker`` processes, all the installed console script, on one PostgreSQL database.

The reliability node types (``tests/reliability/plugin.py``) reach those processes the way a
user's own node package does: a distribution with a ``graph_runtime.nodes`` entry point, here a
``.dist-info`` directory put on the children's ``PYTHONPATH``.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests import pg
from tests.processes import ROOT, ServerProcess, cli_command, free_port, process_env, wait_until
from tests.recording import RECORD_ENV

ENTRY_POINTS = "[graph_runtime.nodes]\nreliability = tests.reliability.plugin:register\n"
METADATA = "Metadata-Version: 2.1\nName: reliability-test-nodes\nVersion: 1.0\n"
START_S = 60.0  # a deadline, not a measure: with other suites running, a process takes 20 s and more to start


def install_plugin(site: Path) -> Path:
    """``reliability-test-nodes 1.0`` installed under ``site`` (a directory for ``PYTHONPATH``)."""
    dist_info = site / "reliability_test_nodes-1.0.dist-info"
    dist_info.mkdir(parents=True, exist_ok=True)
    (dist_info / "METADATA").write_text(METADATA, encoding="utf-8")
    (dist_info / "entry_points.txt").write_text(ENTRY_POINTS, encoding="utf-8")
    return site


def asyncpg_url(url: str) -> str:
    """The SQLAlchemy URL of a database, as asyncpg takes it."""
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


@asynccontextmanager
async def pg_database() -> AsyncIterator[str]:
    """A new database with the schema on the machine's PostgreSQL, dropped after."""
    user, reason = await pg.find_user()
    if user is None:
        pytest.skip(f"PostgreSQL is not reachable at {pg.PG_HOST} as {' or '.join(pg.PG_USERS)} ({reason})")
    url = await pg.create_database(user)
    try:
        yield url
    finally:
        await pg.drop_database(url)


@asynccontextmanager
async def deployed(tmp_path: Path, *, lease_s: float = 2.0) -> AsyncIterator[Deployment]:
    """A :class:`Deployment` on a new database of the machine's PostgreSQL; its processes killed after."""
    async with pg_database() as url:
        deployment = Deployment(tmp_path, url, lease_s=lease_s)
        try:
            yield deployment
        finally:
            deployment.close()


class Process(ServerProcess):
    """A ``graph-runtime`` command with the plugin installed and the record file named."""

    def __init__(self, args: Sequence[str], *, cwd: Path, site: Path, record: Path, port: int = 0) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.args = list(args)
        env = process_env(**{RECORD_ENV: str(record), "PYTHONPATH": f"{site}:{ROOT}"})
        self._spawn(cli_command(*args), cwd=cwd, env=env)


class Deployment:
    """Starts the processes of one test and kills every one of them at the end (``close``)."""

    def __init__(self, tmp_path: Path, database_url: str, *, lease_s: float = 2.0) -> None:
        self.tmp_path = tmp_path
        self.database_url = database_url
        self.site = install_plugin(tmp_path / "site")
        self.record = tmp_path / "events.log"
        self.flows = tmp_path / "flows"
        self.flows.mkdir(exist_ok=True)
        self.common = ("--db", database_url, "--lease-s", str(lease_s))
        self.processes: list[Process] = []
        self.api: Process | None = None
        self.token = ""

    def start_api(self, *flags: str) -> Process:
        """``graph-runtime serve --workers 0``, ready (it prints the first admin key on an empty database)."""
        for attempt in range(3):
            port = free_port()
            api = self._start(["serve", "--workers", "0", "--port", str(port), "--flows", str(self.flows),
                               *self.common, *flags], port=port)
            try:
                api.wait_ready(START_S)
            except AssertionError:
                api.kill()
                if "address already in use" not in api.stderr.lower() or attempt == 2:
                    raise
                continue
            self.api = api
            self.token = self.token or api.keys_printed[0]
            return api
        raise AssertionError("unreachable")

    def start_worker(self, *flags: str, wait: bool = True) -> Process:
        """``graph-runtime worker``; with ``wait``, once it says it claims tasks."""
        worker = self._start(["worker", *self.common, *flags])
        if wait:
            wait_ready(worker)
        return worker

    def _start(self, args: list[str], port: int = 0) -> Process:
        process = Process(args, cwd=self.tmp_path, site=self.site, record=self.record, port=port)
        self.processes.append(process)
        return process

    def close(self) -> None:
        for process in self.processes:
            process.kill()

    def session(self) -> aiohttp.ClientSession:
        """An HTTP client with the admin key, for the API process."""
        return aiohttp.ClientSession(base_url=self.api_url, headers={"Authorization": f"Basic {self.token}"},
                                     timeout=aiohttp.ClientTimeout(total=30))

    @property
    def api_url(self) -> str:
        assert self.api is not None, "start_api() first"
        return self.api.url

    def describe(self) -> str:
        return "\n".join(f"=== {' '.join(p.args[:1])} pid {p.proc.pid}: {p.describe()}" for p in self.processes)


def is_ready(worker: Process) -> bool:
    """The worker has said it claims tasks."""
    return "graph-runtime worker " in worker.stdout


def wait_ready(worker: Process, timeout: float = START_S) -> None:
    def ready() -> bool:
        if worker.proc.poll() is not None:
            raise AssertionError(f"graph-runtime worker exited during start-up:\n{worker.describe()}")
        return is_ready(worker)

    try:
        wait_until(ready, timeout=timeout, interval=0.05, what="the worker's start-up line")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{worker.describe()}") from None


def sigkill(process: Process) -> None:
    process.proc.send_signal(signal.SIGKILL)
    process.proc.wait(timeout=10)


async def put_flow(http: aiohttp.ClientSession, flow: dict[str, Any]) -> None:
    async with http.put(f"/api/v1/flows/{flow['id']}", json=flow) as answer:
        assert answer.status in (200, 201), await answer.text()


async def execute(http: aiohttp.ClientSession, flow_id: str, body: dict[str, Any] | None = None) -> int:
    async with http.post(f"/api/v1/flow/{flow_id}/execute", json=body or {}) as answer:
        assert answer.status == 201, f"{answer.status} {await answer.text()}"
        return int((await answer.json())["id"])


async def wait_ended(http: aiohttp.ClientSession, task_ids: Sequence[int], *, timeout: float,
                     describe: Any = None, interval: float = 0.2) -> dict[int, dict[str, Any]]:
    """Every task of ``task_ids`` once it has ended (read through GET /api/v1/task)."""
    ended: dict[int, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    while True:
        for task_id in [t for t in task_ids if t not in ended]:
            async with http.get(f"/api/v1/task/{task_id}") as answer:
                if answer.status != 200:
                    continue
                task = await answer.json()
            if task["status"] >= 3:
                ended[task_id] = task
        if len(ended) == len(task_ids):
            return ended
        if time.monotonic() > deadline:
            left = sorted(set(task_ids) - set(ended))
            raise AssertionError(f"{len(left)} task(s) not ended within {timeout}s: {left[:20]}\n"
                                 f"{describe() if describe else ''}")
        await asyncio.sleep(interval)
