"""Durability of maps and subflows: a server SIGKILLed while a map's items or a child task run
resumes them without running again an item or a child node committed as succeeded, and without
starting a second child task.

Same set-up as ``test_crash_recovery``: the server is a child process with the recording node type
(``tests/recording.py``) on a real SQLite file; the event log and the database read between the kill
and the restart say what ran and what had been committed.
"""

from __future__ import annotations

import contextlib
import signal
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.http_api.test_crash_recovery import RecordingServer, poll, start_server
from tests.processes import sqlite_url
from tests.recording import read_events

FLAGS = ("--max-concurrent-jobs", "4", "--lease-s", "1", "--poll-interval-s", "0.2")
ITEMS = 40
MAP_FLOW = {
    "id": "batch",
    "nodes": [
        {"id": "s", "type": "start", "settings": {"data": {"items": list(range(ITEMS))}}},
        {"id": "m", "type": "map", "settings": {"node": {"type": "test.record", "settings": {"sleep_s": 0.05}},
                                                 "concurrency": 4}},
        {"id": "e", "type": "end"},
    ],
    "edges": [{"from": "s", "output": "items", "to": "m", "input": "items"},
              {"from": "m", "output": "results", "to": "e", "input": "results"}],
}
CHILD_FLOW = {
    "id": "child",
    "nodes": [{"id": n, "type": "test.record", "settings": {"sleep_s": 0.25}} for n in ("a", "b", "c", "d")],
    "edges": [{"from": "a", "to": "b"}, {"from": "b", "to": "c"}, {"from": "c", "to": "d"}],
    "defaults": {"start_node_id": "a", "end_node_id": "d"},
}
PARENT_FLOW = {
    "id": "parent",
    "nodes": [{"id": "call", "type": "subflow", "settings": {"flow_id": "child"}}, {"id": "e", "type": "end"}],
    "edges": [{"from": "call", "output": "node", "to": "e", "input": "last"}],
    "defaults": {"start_node_id": "call"},
}


def committed_runs(db: Path) -> dict[tuple[int, str], str]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return {(t, n): s for t, n, s in conn.execute("SELECT task_id, node_id, status FROM node_run")}


async def crash_and_resume(tmp_path: Path, flows: list[dict[str, Any]], flow_id: str,
                           killed_when: Any) -> tuple[dict[str, Any], dict[tuple[int, str], str], list[Any], int, str]:
    """Run ``flow_id``, SIGKILL the server once ``killed_when(events)`` holds, restart it on the same
    database and wait for the task's end. Returns the ended task, the node runs committed at the
    kill, every recorded event, the killed process's pid and the new server's url."""
    db, record, flow_dir = tmp_path / "crash.db", tmp_path / "events.log", tmp_path / "flows"
    flow_dir.mkdir()
    args = ("--db", sqlite_url(db), "--flows", str(flow_dir), *FLAGS)
    servers: list[RecordingServer] = []
    try:
        first = start_server(args, cwd=tmp_path, record=record, servers=servers)
        token = first.keys_printed[0]
        async with aiohttp.ClientSession(headers={"Authorization": f"Basic {token}"}) as http:
            for flow in flows:
                async with http.put(f"{first.url}/api/v1/flows/{flow['id']}", json=flow) as answer:
                    assert answer.status == 201, await answer.text()
            async with http.post(f"{first.url}/api/v1/flow/{flow_id}/execute", json={}) as answer:
                task_id = (await answer.json())["id"]

            async def ready() -> bool | None:
                return True if killed_when(read_events(record)) else None

            await poll(ready, timeout=60, what="the moment to kill", describe=first.describe, interval=0.02)
            first.proc.send_signal(signal.SIGKILL)
            assert first.proc.wait(timeout=10) == -signal.SIGKILL
            first.kill()
            at_kill = committed_runs(db)
            second = start_server(args, cwd=tmp_path, record=record, servers=servers)

            async def ended() -> dict[str, Any] | None:
                async with http.get(f"{second.url}/api/v1/task/{task_id}") as answer:
                    task = await answer.json()
                return task if task["status"] >= 3 else None

            task = await poll(ended, timeout=60, what="the resumed task's end", describe=second.describe)
            return task, at_kill, read_events(record), first.proc.pid, second.url
    finally:
        for server in servers:
            server.kill()


@pytest.mark.timeout(120)
async def test_a_killed_map_resumes_without_running_a_committed_item_again(tmp_path: Path) -> None:
    task, at_kill, events, killed_pid, _ = await crash_and_resume(
        tmp_path, [MAP_FLOW], "batch", lambda evs: sum(e.kind == "end" for e in evs) >= ITEMS // 3)
    assert task["status_name"] == "succeeded", task["error"]
    assert task["result"] == {"results": [{"node": f"m[{i}]"} for i in range(ITEMS)]}
    assert task["nodes"]["m"]["items"]["succeeded"] == ITEMS
    committed = {n for (_, n), s in at_kill.items() if n.startswith("m[") and s == "succeeded"}
    assert 0 < len(committed) < ITEMS, committed
    after = Counter(e.node_id for e in events if e.kind == "start" and e.pid != killed_pid)
    assert not committed & set(after), f"committed items ran again: {sorted(committed & set(after))}"
    assert set(after) == {f"m[{i}]" for i in range(ITEMS)} - committed  # every other item ran after the restart
    assert max(after.values()) == 1


@pytest.mark.timeout(120)
async def test_a_killed_subflow_resumes_its_one_child_without_running_its_committed_nodes_again(
        tmp_path: Path) -> None:
    task, at_kill, events, killed_pid, _ = await crash_and_resume(
        tmp_path, [CHILD_FLOW, PARENT_FLOW], "parent",
        lambda evs: any(e.kind == "end" and e.node_id == "b" for e in evs))
    assert task["status_name"] == "succeeded", task["error"]
    assert task["result"] == {"last": "d"}
    child_ids = {t for (t, _) in at_kill if t != task["id"]}
    assert len(child_ids) == 1, at_kill  # one child, made once
    [child_id] = child_ids
    committed = {n for (t, n), s in at_kill.items() if t == child_id and s == "succeeded"}
    assert {"a"} <= committed <= {"a", "b"}
    after = [e.node_id for e in events if e.kind == "start" and e.pid != killed_pid]
    assert not committed & set(after) and sorted(after) == sorted({"a", "b", "c", "d"} - committed)
