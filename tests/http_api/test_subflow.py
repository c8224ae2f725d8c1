"""`subflow` over HTTP (SPEC §9): a child task with parent_id, listed by ?parent_id=, cancelled with
its parent, its failure the node's failure."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.conftest import Api


def child(delay_s: float = 0.0) -> dict[str, Any]:
    """shout: start(text) → delay → end(text): the flow a subflow node runs."""
    return {
        "id": "shout",
        "nodes": [
            {"id": "in", "type": "start", "settings": {"data": {"text": "hi"}}},
            {"id": "wait", "type": "delay", "settings": {"seconds": delay_s}},
            {"id": "out", "type": "end"},
        ],
        "edges": [
            {"from": "in", "output": "text", "to": "wait", "input": "value"},
            {"from": "wait", "output": "value", "to": "out", "input": "text"},
        ],
    }


def parent(**sub: Any) -> dict[str, Any]:
    """caller: subflow(shout) → end(echo)."""
    return {
        "id": "caller",
        "defaults": {"start_node_id": "call"},
        "nodes": [
            {"id": "call", "type": "subflow", "settings": {"flow_id": "shout", **sub}},
            {"id": "e", "type": "end"},
        ],
        "edges": [{"from": "call", "output": "text", "to": "e", "input": "echo"}],
    }


async def test_the_child_runs_with_parent_id_and_its_result_is_the_nodes_output(api: Api) -> None:
    await api.put_flow(child())
    await api.put_flow(parent(node_settings={"in": {"data": {"text": "hello"}}}))
    task = await api.execute("caller", {}, params={"wait": "20"})
    assert task["status_name"] == "succeeded", task["error"]
    assert task["result"] == {"echo": "hello"} and task["parent_id"] is None
    listed = await api.json("GET", "/api/v1/tasks", 200, params={"parent_id": str(task["id"])})
    [kid] = listed["tasks"]
    assert kid["parent_id"] == task["id"] and kid["flow_id"] == "shout" and kid["status_name"] == "succeeded"
    shown = await api.json("GET", f"/api/v1/task/{kid['id']}", 200)
    assert shown["result"] == {"text": "hello"} and shown["parent_id"] == task["id"]
    others = await api.json("GET", "/api/v1/tasks", 200, params={"parent_id": str(kid["id"])})
    assert others["tasks"] == []


async def test_a_failed_child_fails_the_node_with_the_childs_error(api: Api) -> None:
    broken = child()
    broken["nodes"][1] = {"id": "wait", "type": "pick", "settings": {"path": "missing"}}
    await api.put_flow(broken)
    await api.put_flow(parent())
    task = await api.execute("caller", {}, params={"wait": "20"})
    assert task["status_name"] == "failed"
    assert task["error"]["node_id"] == "call"
    listed = await api.json("GET", "/api/v1/tasks", 200, params={"parent_id": str(task["id"])})
    [kid] = listed["tasks"]
    assert kid["status_name"] == "failed" and kid["error"]["node_id"] == "wait"
    assert task["error"]["code"] == kid["error"]["code"] == "node_failed"
    assert task["error"]["message"] == f"child task {kid['id']} failed (node wait): {kid['error']['message']}"


async def test_a_bad_child_request_fails_the_node_naming_the_flow(api: Api) -> None:
    await api.put_flow(child())
    await api.put_flow(parent(end_node_id="nowhere"))
    task = await api.execute("caller", {}, params={"wait": "20"})
    assert task["status_name"] == "failed" and task["error"]["code"] == "invalid_params"
    assert "child flow 'shout'" in task["error"]["message"] and "nowhere" in task["error"]["message"]


async def test_cancelling_the_parent_cancels_the_child(api: Api) -> None:
    await api.put_flow(child(delay_s=30))
    await api.put_flow(parent())
    task = await api.execute("caller", {})
    kids: list[dict[str, Any]] = []
    for _ in range(100):
        kids = (await api.json("GET", "/api/v1/tasks", 200, params={"parent_id": str(task["id"])}))["tasks"]
        if kids and kids[0]["status_name"] == "running":
            break
        await asyncio.sleep(0.05)
    assert kids and kids[0]["status_name"] == "running"
    await api.json("POST", f"/api/v1/task/{task['id']}/cancel", 202)
    for _ in range(100):
        kid = await api.json("GET", f"/api/v1/task/{kids[0]['id']}", 200)
        if kid["status_name"] != "running":
            break
        await asyncio.sleep(0.05)
    assert kid["status_name"] == "cancelled"
    ended = await api.json("GET", f"/api/v1/task/{task['id']}", 200, params={"wait": "10"})
    assert ended["status_name"] == "cancelled"
