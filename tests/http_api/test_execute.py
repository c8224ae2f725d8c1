"""Execute and poll, as Scade's clients do it."""

from __future__ import annotations

import copy
import time
from datetime import datetime

import pytest

from tests.conftest import Api
from tests.support import Blocking, FlowBuilder, eventually

SCADE_BODY = {
    "start_node_id": "SYnn-start",
    "end_node_id": "y5iI-end",
    "result_node_id": "y5iI-end",
    "node_settings": {"SYnn-start": {"data": {"image_url": "https://example.com/dog.jpg", "style": "long"}}},
}


def parse_ts(value: str) -> datetime:
    assert value.endswith("Z"), value
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def test_scade_request_on_the_alias_answers_200_and_polls_to_status_3(api: Api) -> None:
    response = await api.client.post("/api/v1/scade/flow/caption-image/execute", json=SCADE_BODY,
                                     headers={"Authorization": f"Basic {api.token}"})
    assert response.status == 200
    queued = await response.json()
    assert queued["status"] in (1, 2, 3)
    task = await api.wait_for_status(queued["id"], "succeeded")
    assert task["status"] == 3 and task["status_name"] == "succeeded"
    assert task["result"] == {
        "caption": "Describe the image at https://example.com/dog.jpg in a long sentence.",
        "request": {"image_url": "https://example.com/dog.jpg", "style": "long"},
    }
    assert task["execution_time"] > 0
    assert task["execution_cost"] == 0.0
    assert task["ref_id"] == "flow:caption-image;" and task["task_type"] == 4 and task["is_hide"] is False
    assert task["data"] == {"node_id": None, **SCADE_BODY, "init_context": {}}
    assert parse_ts(task["created"]) <= parse_ts(task["started"]) <= parse_ts(task["finished"])
    assert set(task["nodes"]) == {"SYnn-start", "prompt", "y5iI-end"}
    assert all(n["status"] == "succeeded" and n["attempts"] == 1 for n in task["nodes"].values())


async def test_execute_answers_201_with_location_and_the_queued_task(api: Api) -> None:
    response = await api.request("POST", "/api/v1/flow/caption-image/execute", json=SCADE_BODY)
    body = await response.json()
    assert response.status == 201
    assert response.headers["Location"] == f"/api/v1/task/{body['id']}"
    assert body["finished"] is None or body["status"] == 3
    assert set(body["nodes"]) == {"SYnn-start", "prompt", "y5iI-end"}, "every run-set node is listed at once"
    assert (await api.wait_for_status(body["id"], "succeeded"))["result"]["caption"].endswith("long sentence.")


async def test_defaults_fill_in_what_the_request_leaves_out(api: Api) -> None:
    task = await api.execute("caption-image", {})
    assert task["data"]["start_node_id"] == "SYnn-start" and task["data"]["result_node_id"] == "y5iI-end"
    done = await api.wait_for_status(task["id"], "succeeded")
    assert done["result"]["request"] == {"image_url": "https://example.com/cat.jpg", "style": "short"}


async def test_empty_body_is_an_empty_object(api: Api) -> None:
    response = await api.request("POST", "/api/v1/flow/caption-image/execute", data=b"")
    assert response.status == 201


async def test_wait_holds_the_answer_until_the_task_ends(api: Api) -> None:
    task = await api.execute("caption-image", SCADE_BODY, params={"wait": "10"})
    assert task["status"] == 3 and task["result"]["caption"]


async def test_a_waited_execute_on_an_idle_server_spends_no_time_queued(api: Api) -> None:
    """Its task is created running in a free slot of the process that answers (no claim after it)."""
    scheduler = api.services.scheduler

    def slot_free() -> bool:  # once the scheduler's first look at the queue found it empty
        claim = scheduler.reserve_slot()
        if claim is not None:
            scheduler.run_reserved(None)
        return claim is not None

    await eventually(slot_free, timeout=5)
    task = await api.execute("caption-image", SCADE_BODY, params={"wait": "10"})
    assert task["status"] == 3 and task["started"] == task["created"]
    queued = await api.execute("caption-image", SCADE_BODY)  # nobody waits: queued, then claimed
    done = await api.wait_for_status(queued["id"], "succeeded")
    assert parse_ts(done["started"]) > parse_ts(done["created"])


async def test_independent_branches_run_concurrently(api: Api) -> None:
    flow = (FlowBuilder("parallel").node("s", "start").node("a", "test.sleep", seconds=1.0)
            .node("b", "test.sleep", seconds=1.0).node("e", "end")
            .edge("s", "a", input="x").edge("s", "b", input="x").edge("a", "e").edge("b", "e").build())
    await api.put_flow(flow)
    task = await api.execute("parallel", params={"wait": "10"})
    assert task["status"] == 3
    a, b = task["nodes"]["a"], task["nodes"]["b"]
    assert parse_ts(a["started"]) < parse_ts(b["finished"]) and parse_ts(b["started"]) < parse_ts(a["finished"])
    assert task["execution_time"] < 1.8, "two 1 s branches must overlap, not add up"
    assert task["execution_cost"] >= 2.0  # test.sleep costs 1 credit per second of running


async def test_failing_node_fails_the_task_naming_it_and_skips_dependents(api: Api) -> None:
    flow = (FlowBuilder("failing").node("s", "start").node("bad", "test.fail", message="model exploded", after_s=0.1)
            .node("slow", "test.sleep", seconds=30).node("after", "test.echo").node("e", "end")
            .edge("s", "bad", input="x").edge("s", "slow", input="x").edge("bad", "after").edge("after", "e")
            .edge("slow", "e").build())
    await api.put_flow(flow)
    task = await api.execute("failing", params={"wait": "10"})
    assert task["status"] == 4 and task["status_name"] == "failed"
    assert task["error"] == {"node_id": "bad", "code": "node_failed", "message": "model exploded"}
    assert task["result"] is None
    statuses = {n: v["status"] for n, v in task["nodes"].items()}
    assert statuses == {"s": "succeeded", "bad": "failed", "slow": "cancelled", "after": "skipped", "e": "skipped"}
    assert task["execution_time"] < 10, "the failure must not wait for the 30 s sibling"


async def test_transient_failures_are_retried_and_counted(api: Api) -> None:
    flow = (FlowBuilder("flaky").node("s", "start")
            .node("f", "test.fail", transient=True, succeed_on_attempt=3, retries=3, retry_backoff_s=0.01)
            .node("e", "end").edge("s", "f", input="x").edge("f", "e").build())
    await api.put_flow(flow)
    task = await api.execute("flaky", params={"wait": "10"})
    assert task["status"] == 3
    assert task["nodes"]["f"]["attempts"] == 3
    assert task["result"] == {"f": {"attempt": 3}}


async def test_non_transient_failures_are_not_retried(api: Api) -> None:
    flow = (FlowBuilder("guarded").node("s", "start", data={"ok": False})
            .node("g", "guard", message="no input", retries=5)
            .node("e", "end").edge("s", "g", output="ok", input="condition").edge("g", "e").build())
    await api.put_flow(flow)
    task = await api.execute("guarded", params={"wait": "10"})
    assert task["error"]["code"] == "guard_failed" and task["error"]["message"] == "no input"
    assert task["nodes"]["g"]["attempts"] == 1


async def test_node_and_task_timeouts_have_their_codes(api: Api) -> None:
    flow = (FlowBuilder("slow").node("s", "start").node("z", "test.sleep", seconds=5).node("e", "end")
            .edge("s", "z", input="x").edge("z", "e").build())
    await api.put_flow(flow)
    node_timeout = await api.execute("slow", {"node_settings": {"z": {"timeout_s": 0.1}}}, params={"wait": "10"})
    assert node_timeout["error"]["code"] == "node_timeout" and node_timeout["error"]["node_id"] == "z"
    task_timeout = await api.execute("slow", {"timeout_s": 0.2}, params={"wait": "10"})
    assert task_timeout["status_name"] == "failed" and task_timeout["error"]["code"] == "task_timeout"
    assert task_timeout["nodes"]["z"]["status"] == "cancelled"


async def test_revision_pins_an_old_definition(api: Api) -> None:
    definition = (FlowBuilder("versions").node("c", "constant", value="v1").node("e", "end")
                  .edge("c", "e", output="value", input="out").build())
    assert (await api.put_flow(definition))["revision"] == 1
    changed = copy.deepcopy(definition)
    changed["nodes"][0]["settings"]["value"] = "v2"
    assert (await api.put_flow(changed))["revision"] == 2
    assert (await api.put_flow(changed, status=200))["revision"] == 2
    body = {"start_node_id": "c"}
    latest = await api.execute("versions", body, params={"wait": "10"})
    pinned = await api.execute("versions", body, params={"wait": "10", "revision": "1"})
    assert latest["result"] == {"out": "v2"} and latest["revision"] == 2
    assert pinned["result"] == {"out": "v1"} and pinned["revision"] == 1


async def test_cancel_a_running_task(api: Api) -> None:
    flow = (FlowBuilder("long").node("s", "start").node("z", "test.sleep", seconds=30).node("after", "test.echo")
            .node("e", "end").edge("s", "z", input="x").edge("z", "after").edge("after", "e").build())
    await api.put_flow(flow)
    task = await api.execute("long")
    await eventually(lambda: _node_running(api, task["id"], "z"))
    cancelled = await api.json("POST", f"/api/v1/task/{task['id']}/cancel", 202)
    assert cancelled["status"] == 5 and cancelled["status_name"] == "cancelled"
    assert cancelled["nodes"]["z"]["status"] == "cancelled" and cancelled["nodes"]["after"]["status"] == "skipped"
    again = await api.json("POST", f"/api/v1/task/{task['id']}/cancel", 409)
    assert again["error"]["code"] == "task_ended"


async def _node_running(api: Api, task_id: int, node_id: str) -> bool:
    task = await api.task(task_id)
    return task["nodes"].get(node_id, {}).get("status") == "running"


async def test_task_list_is_newest_first_and_pages(api: Api) -> None:
    ids = [(await api.execute("caption-image", params={"wait": "10"}))["id"] for _ in range(3)]
    page = await api.json("GET", "/api/v1/tasks", 200, params={"limit": "2", "flow_id": "caption-image"})
    assert [t["id"] for t in page["tasks"]] == ids[::-1][:2]
    rest = await api.json("GET", "/api/v1/tasks", 200, params={"limit": "2", "before": str(page["next_before"])})
    assert [t["id"] for t in rest["tasks"]] == [ids[0]] and rest["next_before"] is None
    by_status = await api.json("GET", "/api/v1/tasks", 200, params={"status": "3"})
    assert len(by_status["tasks"]) == 3


async def test_idempotency_key_returns_the_first_task(api: Api) -> None:
    headers = {"Idempotency-Key": "order-42"}
    first = await api.execute("caption-image", SCADE_BODY, headers=headers)
    again = await api.execute("caption-image", SCADE_BODY, status=200, headers=headers)
    assert again["id"] == first["id"]
    via_query = await api.execute("caption-image", SCADE_BODY, status=200, params={"executionId": "order-42"})
    assert via_query["id"] == first["id"]
    conflict = await api.execute("caption-image", {**SCADE_BODY, "result_node_id": "prompt"}, status=409,
                                 headers=headers)
    assert conflict["error"]["code"] == "idempotency_conflict"


@pytest.mark.parametrize("cooperative", [True, False])
async def test_cancel_does_not_wait_for_node_code_in_a_thread(api: Api, cooperative: bool) -> None:
    await api.put_flow(FlowBuilder("threaded").node("b", "test.blocking", seconds=3, cooperative=cooperative).build())
    task = await api.execute("threaded", {"start_node_id": "b", "end_node_id": "b"})
    await eventually(lambda: _node_running(api, task["id"], "b"))
    started = time.monotonic()
    cancelled = await api.json("POST", f"/api/v1/task/{task['id']}/cancel", 202)
    assert cancelled["status_name"] == "cancelled" and cancelled["nodes"]["b"]["status"] == "cancelled"
    assert time.monotonic() - started < 1.0, "cancel must not wait for the thread"
    if cooperative:
        await eventually(lambda: Blocking.stopped == [True], timeout=2)  # the thread was told to stop


async def test_a_server_shutting_down_answers_503_and_writes_nothing(api: Api) -> None:
    api.services.accepting = False  # what on_shutdown sets when SIGTERM arrives
    response = await api.request("POST", "/api/v1/flow/caption-image/execute", json={})
    body = await response.json()
    assert response.status == 503 and response.headers["Retry-After"] == "1"
    assert body["error"]["code"] == "shutting_down"
    assert await api.services.repo.count_tasks() == 0
    api.services.accepting = True


@pytest.mark.parametrize("fail", [False, True])
async def test_a_wait_answer_is_exactly_what_a_poll_shows_afterwards(api: Api, fail: bool) -> None:
    # ?wait answers with the task the executor committed, without reading it back: its nodes,
    # their order (by start, unstarted last), timestamps and outcome must be what the store holds.
    builder = (FlowBuilder("branches").node("s", "start", data={"x": 1})
               .node("slow", "test.sleep", seconds=0.05).node("quick", "test.echo")
               .node("j", "merge").node("e", "end")
               .edge("s", "slow", input="v").edge("s", "quick", input="v")
               .edge("slow", "j", input="a").edge("quick", "j", input="b").edge("j", "e"))
    if fail:
        builder = builder.node("boom", "test.fail").edge("quick", "boom", input="v").edge("boom", "j", input="c")
    await api.put_flow(builder.build())
    answered = await api.execute("branches", params={"wait": "10"})
    assert answered["status_name"] == ("failed" if fail else "succeeded")
    polled = await api.task(answered["id"])
    assert answered == polled
    assert list(answered["nodes"]) == list(polled["nodes"])  # dict equality ignores order; clients see it
    if fail:
        assert [n for n, r in answered["nodes"].items() if r["started"] is None] == ["e", "j"]
