"""API and workers as separate processes (SPEC §10): `serve --workers 0` runs no task; a
`graph-runtime worker` on the same database runs them, and drains on SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.processes import SAMPLE_FLOWS, ServerProcess, cli_command, process_env, serving, sqlite_url, wait_until


@pytest.mark.timeout(90)
def test_an_api_only_server_queues_and_a_worker_process_runs(tmp_path: Path) -> None:
    db = sqlite_url(tmp_path / "shared.db")
    with serving("--workers", "0", "--db", db, "--flows", str(SAMPLE_FLOWS), "--poll-interval-s", "0.2",
                 cwd=tmp_path) as api:
        assert "API only" in api.stdout
        token = api.keys_printed[0]
        body = {"node_settings": {"start": {"data": {"mood": "sad"}}}}
        status, task = api.request("POST", "/api/v1/flow/branch-greeting/execute", token=token, body=body)
        assert status == 201
        time.sleep(1.0)
        assert api.request("GET", f"/api/v1/task/{task['id']}", token=token)[1]["status_name"] == "queued"

        worker = subprocess.Popen(cli_command("worker", "--db", db, "--poll-interval-s", "0.2"), cwd=tmp_path,
                                  env=process_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            ended = wait_until(lambda: _ended(api, token, task["id"]), timeout=30, interval=0.1,
                               what="the worker runs the queued task")
            assert ended["status_name"] == "succeeded" and ended["result"] == {"text": "Sorry to hear that, Ada."}
            worker.send_signal(signal.SIGTERM)
            out, err = worker.communicate(timeout=20)
            assert worker.returncode == 0, err
            assert "graph-runtime worker" in out and "draining" in out
            assert "GRAPH_RUNTIME_KEY" not in out  # a worker serves nothing and creates no key
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.communicate()


def _ended(api: ServerProcess, token: str, task_id: int) -> dict | None:  # type: ignore[type-arg]
    task = api.request("GET", f"/api/v1/task/{task_id}", token=token)[1]
    return task if task["status"] >= 3 else None
