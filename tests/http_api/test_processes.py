"""`serve --processes N` (SPEC §10): N API+worker processes on one port, started, used and stopped
as a person would, on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest
from pydantic import SecretStr

from http_api import processes
from http_api.settings import Settings
from tests import pg
from tests.processes import (
    ServerProcess,
    free_port,
    http_json,
    run_cli,
    sqlite_url,
    wait_until,
)

START_S = 90.0
LISTENING = re.compile(r"(\d+) processes listening on http://\S+ \(pids ([\d, ]+)\)")
WAIT_FLOW = {"id": "wait", "name": "wait", "nodes": [{"id": "d", "type": "delay", "settings": {"seconds": 1}}],
             "defaults": {"start_node_id": "d", "end_node_id": "d"}}


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database URL: a SQLite file, or a fresh PostgreSQL database (skipped when none answers)."""
    if request.param == "sqlite":
        yield sqlite_url(tmp_path / "shared.db")
        return
    user, why = asyncio.run(pg.find_user())
    if user is None:
        pytest.skip(f"no PostgreSQL at {pg.PG_HOST}: {why}")
    url = asyncio.run(pg.create_database(user))
    try:
        yield url
    finally:
        asyncio.run(pg.drop_database(url))


def test_a_child_resolves_exactly_the_supervisors_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(processes=3, port=9000, pools=["gpu", "big"], http_allow_hosts=["[::1]:11434", "a.lan"],
                        secrets_key=SecretStr("c2VjcmV0"), flows_dir=Path("flows"), http_allow_private=True, lease_s=2.5)
    for name in list(os.environ):
        if name.startswith("GRAPH_RUNTIME_"):
            monkeypatch.delenv(name)
    for name, value in processes.child_environment(settings, 2).items():
        monkeypatch.setenv(name, value)

    assert processes.slot() == "2/3" and processes.label() == f" process 2 of 3 (pid {os.getpid()})"
    assert Settings() == settings.model_copy(update={"processes": 1})


@pytest.mark.timeout(400)
def test_two_processes_share_the_port_and_the_work_and_stop_with_nothing_lost(tmp_path: Path, database: str) -> None:
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "wait.json").write_text(json.dumps(WAIT_FLOW), encoding="utf-8")
    with supervised("--processes", "2", "--db", database, "--flows", str(flows), "--poll-interval-s", "0.2",
                    cwd=tmp_path) as server:
        pids = _listening_pids(server, 2)
        assert len(server.keys_printed) == 1, server.stdout  # one process created the first key
        token = server.keys_printed[0]
        assert all(f"of 2 (pid {pid})" in server.stdout for pid in pids), server.stdout

        # Each request on a new connection: the kernel spreads connections over the two processes,
        # and a process runs the tasks it queued at once (so its pid is the lease owner).
        first = [_execute(server, token, seconds=1.5) for _ in range(24)]
        owners: set[int] = set()

        def both_seen() -> bool:
            owners.update(_lease_pids(database))
            return owners >= set(pids)

        wait_until(both_seen, timeout=30, interval=0.05, what="both processes run tasks")
        assert owners == set(pids), (owners, server.describe())
        for task_id in first:
            ended = _wait_ended(server, token, task_id)
            assert ended["status_name"] == "succeeded", (ended, server.describe())

        # SIGTERM while tasks run and wait: every process drains, nothing is left running or lost.
        second = [_execute(server, token, seconds=0.5) for _ in range(30)]
        assert server.stop(signal.SIGTERM, timeout=60) == 0, server.describe()
        assert "stopping 2 processes" in server.stdout
        assert not any(_alive(pid) for pid in pids)
        statuses = _statuses(database, second)
        assert set(statuses.values()) <= {"succeeded", "queued"}, (statuses, server.describe())

    with supervised("--db", database, "--flows", str(flows), cwd=tmp_path) as again:  # one process finishes the rest
        token = again.keys_printed[0] if again.keys_printed else token
        for task_id in second:
            assert _wait_ended(again, token, task_id)["status_name"] == "succeeded"


@pytest.mark.timeout(300)
def test_a_child_that_dies_is_restarted(tmp_path: Path) -> None:
    db = sqlite_url(tmp_path / "restart.db")
    with supervised("--processes", "2", "--db", db, "--flows", str(tmp_path), cwd=tmp_path) as server:
        pids = _listening_pids(server, 2)
        os.kill(pids[0], signal.SIGKILL)
        restarted = re.compile(rf"process \d \(pid {pids[0]}\) was killed by SIGKILL; restarted it as pid (\d+)")
        replacement = int(wait_until(lambda: restarted.findall(server.stderr), timeout=60, what="the restart")[0])
        wait_until(lambda: f"(pid {replacement}) listening again" in server.stderr, timeout=START_S,
                   what="the new process listens")
        token = server.keys_printed[0]
        assert all(http_json("GET", f"{server.url}/api/v1/flows", token=token)[0] == 200 for _ in range(8))
        assert server.stop(signal.SIGINT, timeout=60) == 0, server.describe()
        assert not _alive(replacement) and not _alive(pids[1])


@pytest.mark.timeout(400)
def test_a_taken_port_or_a_failed_start_stops_with_exit_1(tmp_path: Path) -> None:
    db = sqlite_url(tmp_path / "x.db")
    with supervised("--db", db, "--flows", str(tmp_path), cwd=tmp_path) as plain:
        taken = run_cli("serve", "--processes", "2", "--port", str(plain.port), "--db", db, cwd=tmp_path, timeout=120)
    assert taken.returncode == 1 and f"cannot listen on 127.0.0.1:{plain.port}" in taken.stderr

    # A database newer than the code (SPEC §10) is refused by every child before it listens.
    with sqlite3.connect(tmp_path / "x.db") as conn:
        conn.execute("UPDATE alembic_version SET version_num = '0099'")
    refused = run_cli("serve", "--processes", "2", "--port", str(free_port()), "--db", db, cwd=tmp_path, timeout=180)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "before it listened" in refused.stderr and "version 0099" in refused.stderr


@contextmanager
def supervised(*args: str, cwd: Path) -> Iterator[ServerProcess]:
    """``serve ARGS`` ready, as ``tests.processes.serving`` but with a start-up deadline for N processes
    importing at once on a busy 2-core machine; always killed on the way out."""
    server = ServerProcess(args, cwd=cwd, port=free_port())
    try:
        server.wait_ready(timeout=START_S)
        yield server
    finally:
        server.kill()


def _listening_pids(server: ServerProcess, count: int) -> list[int]:
    count_text, pids_text = wait_until(lambda: LISTENING.findall(server.stdout), timeout=START_S,
                                       what="every process listens")[0]
    pids = [int(pid) for pid in pids_text.split(", ")]
    assert int(count_text) == count == len(set(pids)) and server.proc.pid not in pids
    return pids


def _execute(server: ServerProcess, token: str, seconds: float) -> int:
    body = {"node_settings": {"d": {"seconds": seconds}}}
    status, task = http_json("POST", f"{server.url}/api/v1/flow/wait/execute", token=token, body=body)
    assert status == 201, task
    return int(task["id"])


def _wait_ended(server: ServerProcess, token: str, task_id: int) -> dict[str, Any]:
    def ended() -> dict[str, Any]:
        task: dict[str, Any] = server.request("GET", f"/api/v1/task/{task_id}", token=token)[1]
        return task if task["status"] >= 3 else {}

    return wait_until(ended, timeout=60, interval=0.1, what=f"task {task_id} ends")


def _rows(database: str, sql: str) -> list[tuple]:  # type: ignore[type-arg]
    if database.startswith("sqlite"):
        with sqlite3.connect(database.split("///", 1)[1]) as conn:
            return list(conn.execute(sql))

    async def fetch() -> list[tuple]:  # type: ignore[type-arg]
        conn = await asyncpg.connect(database.replace("postgresql+asyncpg", "postgresql"))
        try:
            return [tuple(row) for row in await conn.fetch(sql)]
        finally:
            await conn.close()

    return asyncio.run(fetch())


def _lease_pids(database: str) -> set[int]:
    """The pids in the lease owners (``host:pid:hex``) of the running tasks."""
    rows = _rows(database, "SELECT lease_owner FROM task WHERE status = 'running' AND lease_owner IS NOT NULL")
    return {int(owner.split(":")[-2]) for (owner,) in rows}


def _statuses(database: str, task_ids: list[int]) -> dict[int, str]:
    rows = _rows(database, f"SELECT id, status FROM task WHERE id IN ({', '.join(map(str, task_ids))})")
    assert len(rows) == len(task_ids)
    return {task_id: status for task_id, status in rows}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True

