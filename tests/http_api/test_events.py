"""The task event stream (SPEC §11): `GET /api/v1/task/{id}/events` on a real server, read as a
client reads it; resumed with Last-Event-ID; what nodes say (progress, log, token) with secrets
kept out; the Python client's `events()`; and `?wait`, fed by the same hub."""

from __future__ import annotations

import asyncio
from typing import Any

from graph_runtime_client import AsyncClient
from tests.conftest import Api
from tests.support import FlowBuilder, eventually


def _parse(text: str) -> list[dict[str, Any]]:
    """The events of a whole SSE body: ``{"id", "event", "data"}`` each (comments and ``retry`` dropped)."""
    import json

    events = []
    for block in text.split("\n\n"):
        fields: dict[str, Any] = {}
        for line in block.splitlines():
            if line.startswith(":") or ":" not in line:
                continue
            name, value = line.split(":", 1)
            fields[name] = value[1:] if value.startswith(" ") else value
        if "event" in fields:
            events.append({"id": int(fields["id"]), "event": fields["event"], "data": json.loads(fields["data"])})
    return events


async def _stream(api: Api, task_id: int, last_event_id: int | None = None) -> list[dict[str, Any]]:
    headers = {"Last-Event-ID": str(last_event_id)} if last_event_id is not None else {}
    response = await api.request("GET", f"/api/v1/task/{task_id}/events", headers=headers)
    assert response.status == 200, await response.text()
    assert response.headers["Content-Type"].startswith("text/event-stream")
    return _parse(await response.text())


async def _secret(api: Api, value: str) -> None:
    response = await api.request("PUT", "/api/v1/secrets/MODEL_KEY", json={"value": value})
    assert response.status in (200, 201, 204), await response.text()


async def _chatty_flow(api: Api, hold: float = 0.0) -> None:
    await api.put_flow(FlowBuilder("chatty").node("start", "start", data={})
                       .node("talk", "test.chatty", hold=hold, secret={"$secret": "MODEL_KEY"})
                       .node("end", "end").edge("start", "talk", input="data").edge("talk", "end").build())


async def test_a_stream_opened_at_once_carries_the_whole_run_then_closes(api: Api) -> None:
    task = await api.execute("fan-out-fan-in", params={"wait": "0"})
    events = await _stream(api, task["id"])  # opened while queued or running: live, then closed by the end
    assert [e["id"] for e in events] == list(range(1, len(events) + 1)), "ids 1, 2, … with no gap"
    assert events[0]["event"] == "task" and events[0]["data"]["status_name"] == "running"
    assert events[-1]["event"] == "task" and events[-1]["data"]["status_name"] == "succeeded"
    assert events[-1]["data"] == await api.task(task["id"]), "the final event is the task as a poll shows it"
    nodes = [e["data"] for e in events if e["event"] == "node"]
    assert {n["node_id"] for n in nodes} == set((await api.task(task["id"]))["nodes"])
    for node_id in {n["node_id"] for n in nodes}:
        statuses = [n["status"] for n in nodes if n["node_id"] == node_id]
        assert statuses == ["running", "succeeded"], (node_id, statuses)


async def test_a_late_subscriber_gets_the_same_history_and_last_event_id_resumes_exactly(api: Api) -> None:
    task = await api.execute("fan-out-fan-in", params={"wait": "10"})
    assert task["status_name"] == "succeeded"
    history = await _stream(api, task["id"])
    assert history and history == await _stream(api, task["id"])
    for cut in (1, len(history) // 2, len(history) - 1):
        rest = await _stream(api, task["id"], last_event_id=cut)
        assert rest == history[cut:], f"resumed after {cut}: no gap, no duplicate"
    assert await _stream(api, task["id"], last_event_id=len(history)) == []


async def test_task_and_node_events_read_back_show_what_a_poll_showed(api: Api) -> None:
    """Events are stored as typed snapshots and rendered when read: a late subscriber sees each
    node's last event as the task's poll shows that node, and the final event as the poll itself."""
    task = await api.execute("fan-out-fan-in", params={"wait": "10"})
    polled = await api.task(task["id"])
    events = await _stream(api, task["id"])
    assert events[0]["data"]["status_name"] == "running" and events[0]["data"]["finished"] is None
    assert {n["status"] for n in events[0]["data"]["nodes"].values()} == {"pending"}
    assert set(events[0]["data"]["nodes"]) == set(polled["nodes"])
    assert events[-1]["data"] == polled
    last: dict[str, Any] = {}
    for event in events:
        if event["event"] == "node":
            last[event["data"]["node_id"]] = {k: v for k, v in event["data"].items() if k != "node_id"}
    assert last == polled["nodes"]


async def test_a_live_stream_and_the_history_read_later_are_the_same(api: Api) -> None:
    """A queued task, claimed by the scheduler (its first claim comes without node runs): the
    stream read live and the history read after its end carry the same events, the first one
    listing every node pending."""
    task = await api.execute("fan-out-fan-in", params={"wait": "0"})
    live = await _stream(api, task["id"])
    assert live == await _stream(api, task["id"])
    polled = await api.task(task["id"])
    assert set(live[0]["data"]["nodes"]) == set(polled["nodes"])
    assert {n["status"] for n in live[0]["data"]["nodes"].values()} == {"pending"}
    # A flow with a skipped branch: the nodes keep their order too (plan order at the start).
    task = await api.execute("branch-greeting", params={"wait": "0"})
    live = await _stream(api, task["id"])
    assert [list(e["data"]["nodes"]) for e in live if e["event"] == "task"] == [
        list(e["data"]["nodes"]) for e in await _stream(api, task["id"]) if e["event"] == "task"]


async def test_nodes_progress_logs_and_tokens_arrive_live_without_their_secrets(api: Api) -> None:
    await _secret(api, "sk-live-do-not-show")
    await _chatty_flow(api, hold=0.3)
    task = await api.execute("chatty")
    events = await _stream(api, task["id"])
    said = [(e["event"], e["data"]) for e in events if e["event"] in ("progress", "log", "token")]
    assert [d["fraction"] for kind, d in said if kind == "progress"] == [0.0, 0.5, 1.0]
    assert [d["message"] for kind, d in said if kind == "progress"] == ["starting", "from a thread", None]
    assert [d["text"] for kind, d in said if kind == "token"] == ["hello", " world"]
    logs = [d for kind, d in said if kind == "log"]
    assert len(logs) == 1 and logs[0]["node_id"] == "talk" and logs[0]["level"] == "info"
    assert "sk-live-do-not-show" not in str(events), "a secret never surfaces, not even in a node's log line"
    assert "using key" in logs[0]["message"]
    # In order: the node starts, speaks, then ends.
    kinds = [e["event"] for e in events if e["event"] != "task" and e["data"]["node_id"] == "talk"]
    assert kinds[0] == "node" and kinds[-1] == "node" and set(kinds[1:-1]) == {"progress", "log", "token"}


async def test_bad_last_event_id_and_unknown_task(api: Api) -> None:
    task = await api.execute("fan-out-fan-in", params={"wait": "10"})
    bad = await api.json("GET", f"/api/v1/task/{task['id']}/events", 422, headers={"Last-Event-ID": "abc"})
    assert bad["error"]["field"] == "Last-Event-ID"
    missing = await api.json("GET", "/api/v1/task/999999/events", 404)
    assert missing["error"]["code"] == "task_not_found"
    nobody = await api.request("GET", f"/api/v1/task/{task['id']}/events", token="bm9ib2R5Om5vdGhpbmc=")
    assert nobody.status == 401


async def test_a_cancel_before_start_is_the_streams_one_final_event(api: Api) -> None:
    await _secret(api, "k")
    await _chatty_flow(api)
    await api.services.scheduler.drain(0)  # nothing is claimed: the task stays queued
    task = await api.execute("chatty")
    reading = asyncio.ensure_future(_stream(api, task["id"]))
    await asyncio.sleep(0.2)
    assert not reading.done(), "a queued task's stream waits"
    await api.json("POST", f"/api/v1/task/{task['id']}/cancel", 202)
    events = await asyncio.wait_for(reading, 10)
    assert [(e["id"], e["event"], e["data"]["status_name"]) for e in events] == [(1, "task", "cancelled")]


async def test_the_python_client_follows_the_stream(api: Api) -> None:
    await _secret(api, "k")
    await _chatty_flow(api, hold=0.2)
    url = str(api.client.make_url("/")).rstrip("/")
    async with AsyncClient(url, api.token) as client:
        task = await client.submit("chatty")
        seen = [event async for event in client.events(task)]
    assert seen[0].event == "task" and seen[-1].event == "task"
    assert seen[-1].data["status_name"] == "succeeded"
    assert [e.data["text"] for e in seen if e.event == "token"] == ["hello", " world"]


async def test_wait_answers_when_the_task_ends(api: Api) -> None:
    await _chatty_flow(api, hold=0.5)
    await _secret(api, "k")
    task = await api.execute("chatty")
    ended = await api.json("GET", f"/api/v1/task/{task['id']}", 200, params={"wait": "20"})
    assert ended["status_name"] == "succeeded"
    assert (await eventually(lambda: _count(api, task["id"]))) >= 3


async def _count(api: Api, task_id: int) -> int:
    return len(await _stream(api, task_id))
