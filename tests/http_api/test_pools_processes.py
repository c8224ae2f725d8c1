"""Pools across processes (SPEC §10), started as a user starts them: an API that runs no node code,
a worker without pools and, later, a worker with `--pool gpu`. The GPU node waits, visibly, until
the GPU worker exists; the rest of the task runs on the plain worker. SQLite and PostgreSQL."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests import pg
from tests.processes import ServerProcess, cli_command, process_env, serving, sqlite_url, wait_until

FLOW = """\
id: caption-on-gpu
nodes:
  - {id: start, type: start, settings: {data: {name: Ada}}}
  - {id: prepare, type: template, settings: {template: "photo of {{ name }}"}}
  - {id: caption, type: template, pool: gpu, settings: {template: "a caption for {{ text }}"}}
  - {id: end, type: end}
edges:
  - {from: start, output: name, to: prepare, input: name}
  - {from: prepare, output: text, to: caption, input: text}
  - {from: caption, output: text, to: end, input: text}
"""


@contextmanager
def _worker(db: str, cwd: Path, *pools: str) -> Iterator[subprocess.Popen[str]]:
    flags = [arg for pool in pools for arg in ("--pool", pool)]
    proc = subprocess.Popen(cli_command("worker", "--db", db, "--poll-interval-s", "0.2", *flags), cwd=cwd,
                            env=process_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def _task(api: ServerProcess, token: str, task_id: int) -> dict[str, Any]:
    return api.request("GET", f"/api/v1/task/{task_id}", token=token)[1]


def _waits_for_gpu(api: ServerProcess, token: str, task_id: int) -> dict[str, Any] | None:
    task = _task(api, token, task_id)
    return task if task["nodes"]["caption"].get("waiting_for_pool") == "gpu" else None


def _walk_through(db: str, tmp_path: Path) -> None:
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "caption-on-gpu.yaml").write_text(FLOW)
    with serving("--workers", "0", "--db", db, "--flows", str(flows), "--poll-interval-s", "0.2",
                 cwd=tmp_path) as api:
        token = api.keys_printed[0]
        status, task = api.request("POST", "/api/v1/flow/caption-on-gpu/execute", token=token, body={})
        assert status == 201, task
        with _worker(db, tmp_path) as cpu:
            waiting = wait_until(lambda: _waits_for_gpu(api, token, task["id"]), timeout=30, interval=0.1,
                                 what="the task waits for a worker of pool gpu")
            # Running, not failed; what any worker may run has run; the GPU node is pending and says why.
            assert waiting["status_name"] == "running"
            assert waiting["nodes"]["prepare"]["status"] == "succeeded"
            assert waiting["nodes"]["caption"]["status"] == "pending"
            assert "waiting_for_pool" not in waiting["nodes"]["end"]
            assert cpu.poll() is None

            with _worker(db, tmp_path, "gpu"):
                ended = wait_until(lambda: (t := _task(api, token, task["id"]))["status"] >= 3 and t,
                                   timeout=30, interval=0.1, what="the GPU worker finishes the task")
        assert ended["status_name"] == "succeeded", ended
        assert ended["result"] == {"text": "a caption for photo of Ada"}
        assert "waiting_for_pool" not in ended["nodes"]["caption"]
        assert {node["attempts"] for node in ended["nodes"].values()} == {1}

        # A task nobody can finish is cancelled at once, with a message naming the pool.
        status, stuck = api.request("POST", "/api/v1/flow/caption-on-gpu/execute", token=token, body={})
        with _worker(db, tmp_path):
            wait_until(lambda: _waits_for_gpu(api, token, stuck["id"]), timeout=30, interval=0.1,
                       what="the second task waits for the pool")
            status, cancelled = api.request("POST", f"/api/v1/task/{stuck['id']}/cancel", token=token)
        assert status == 202 and cancelled["status_name"] == "cancelled", cancelled
        final = _task(api, token, stuck["id"])
        assert final["status_name"] == "cancelled" and "gpu" in final["error"]["message"]


@pytest.mark.timeout(150)
def test_a_gpu_node_waits_for_a_gpu_worker_on_sqlite(tmp_path: Path) -> None:
    _walk_through(sqlite_url(tmp_path / "shared.db"), tmp_path)


@pytest.mark.postgres
@pytest.mark.timeout(150)
def test_a_gpu_node_waits_for_a_gpu_worker_on_postgres(tmp_path: Path) -> None:
    pg.run_on_a_new_database(lambda url: _walk_through(url, tmp_path))
