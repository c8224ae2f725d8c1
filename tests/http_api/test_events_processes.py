"""The event stream when the API runs no node code (SPEC §10, §11): a `serve --workers 0` process
streams the events a `graph-runtime worker` process writes, live, with ids 1, 2, … and the final
`task` event; a reconnect with Last-Event-ID resumes where it left. SQLite and PostgreSQL."""

from __future__ import annotations

import json
import subprocess
import threading
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests import pg
from tests.processes import SAMPLE_FLOWS, cli_command, process_env, serving, sqlite_url

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _read_stream(url: str, token: str, last_event_id: int | None = None) -> list[dict[str, Any]]:
    headers = {"Authorization": f"Basic {token}"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = str(last_event_id)
    events, current = [], {}
    with _OPENER.open(urllib.request.Request(url, headers=headers), timeout=60) as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        for raw in response:
            line = raw.decode().rstrip("\n")
            if not line:
                if "event" in current:
                    events.append({"id": int(current["id"]), "event": current["event"],
                                   "data": json.loads(current["data"])})
                current = {}
            elif not line.startswith(":") and ":" in line:
                name, value = line.split(":", 1)
                current[name] = value.lstrip(" ")
    return events


def _walk_through(db: str, tmp_path: Path) -> None:
    with serving("--workers", "0", "--db", db, "--flows", str(SAMPLE_FLOWS), "--poll-interval-s", "0.2",
                 cwd=tmp_path) as api:
        token = api.keys_printed[0]
        status, task = api.request("POST", "/api/v1/flow/fan-out-fan-in/execute", token=token, body={})
        assert status == 201, task
        url = f"{api.url}/api/v1/task/{task['id']}/events"
        # Subscribed before any worker exists: the stream waits, then carries the run live.
        read: list[list[dict[str, Any]]] = []
        reader = threading.Thread(target=lambda: read.append(_read_stream(url, token)))
        reader.start()
        worker = subprocess.Popen(cli_command("worker", "--db", db, "--poll-interval-s", "0.2"), cwd=tmp_path,
                                  env=process_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            reader.join(timeout=60)
            assert not reader.is_alive(), "the stream closed after the final task event"
        finally:
            worker.terminate()
            worker.wait(timeout=20)
        events = read[0]
        assert [e["id"] for e in events] == list(range(1, len(events) + 1))
        assert events[0]["event"] == "task" and events[0]["data"]["status_name"] == "running"
        assert events[-1]["event"] == "task" and events[-1]["data"]["status_name"] == "succeeded"
        assert sum(1 for e in events if e["event"] == "node") == 2 * len(events[-1]["data"]["nodes"])
        # The same history later, and exactly the rest after a given id.
        assert _read_stream(url, token) == events
        assert _read_stream(url, token, last_event_id=3) == events[3:]


@pytest.mark.timeout(150)
def test_an_api_process_streams_what_a_worker_process_runs_on_sqlite(tmp_path: Path) -> None:
    _walk_through(sqlite_url(tmp_path / "shared.db"), tmp_path)


@pytest.mark.postgres
@pytest.mark.timeout(150)
def test_an_api_process_streams_what_a_worker_process_runs_on_postgres(tmp_path: Path) -> None:
    pg.run_on_a_new_database(lambda url: _walk_through(url, tmp_path))
