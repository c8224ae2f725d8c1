"""Ziggy's API: launch with ``POST /api?flowUuid=…``, then read ``/api/ziggy/execution-status/<executionId>``."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import pytest

from tests.conftest import Api
from tests.http_api.test_postgres import pg_api  # noqa: F401  # the fixture: a server on a fresh PostgreSQL database
from tests.support import FlowBuilder, eventually

ECHO = (FlowBuilder("zflow", name="Ziggy echo").node("in", "start", data={"who": "nobody"}).node("out", "end")
        .edge("in", "out", output="who", input="who").build())


async def launch(api: Api, query: str, body: Any = None, *, key: str | None = None, status: int = 201) -> Any:
    """Ziggy's way: the server key in the query, no Authorization header."""
    response = await api.client.post(f"/api?{query}&execution-key={key or api.token}", json=body or {})
    answer = await response.json()
    assert response.status == status, answer
    return answer


async def ended_status(api: Api, execution_id: str) -> Any:
    async def ended() -> Any:
        response = await api.request("GET", f"/api/ziggy/execution-status/{execution_id}")
        body = await response.json()
        if response.status == 404:
            assert body["error"]["code"] == "execution_not_finished", body
            return None
        assert response.status == 200, body
        return body

    return await eventually(ended, timeout=15)


async def test_launch_then_status_in_ziggys_fields(api: Api) -> None:
    await api.put_flow(ECHO)
    execution_id = str(uuid.uuid4())
    started = await launch(api, f"flowUuid=zflow&executionEnvironmentMode=PROD&executionId={execution_id}",
                           {"who": "ziggy"})
    assert started["executionId"] == execution_id and started["flowUuid"] == "zflow"
    status = await ended_status(api, execution_id)
    assert set(status) >= {"executionId", "terminationStatus", "ms", "executionEnvironmentMode", "createdAt",
                           "flowUuid", "flowName"}
    assert status["terminationStatus"] == "SUCCESS" and status["executionEnvironmentMode"] == "PROD"
    assert (status["flowUuid"], status["flowName"], status["executionId"]) == ("zflow", "Ziggy echo", execution_id)
    assert isinstance(status["ms"], int) and status["ms"] >= 0 and status["createdAt"].endswith("Z")
    assert status["data"] == {"who": "ziggy"}
    task = await api.task(status["taskId"])
    assert task["mode"] == "prod" and task["data"]["node_settings"] == {"in": {"data": {"who": "ziggy"}}}


async def test_the_status_is_a_404_while_queued_or_running(api: Api) -> None:
    await api.put_flow(FlowBuilder("znap").node("in", "start").node("nap", "test.sleep", seconds=30)
                       .node("out", "end").edge("in", "nap").edge("nap", "out").build())
    started = await launch(api, "flowUuid=znap&executionId=slow-1")
    assert started["executionId"] == "slow-1"
    response = await api.request("GET", "/api/ziggy/execution-status/slow-1")
    assert response.status == 404
    assert (await response.json())["error"]["code"] == "execution_not_finished"
    await api.json("POST", f"/api/v1/task/{started['taskId']}/cancel", 202)
    status = await ended_status(api, "slow-1")
    assert status["terminationStatus"] == "KILLED"
    assert status["executionEnvironmentMode"] == "DEV"  # Ziggy's default when the mode is left out


@pytest.mark.parametrize(("failing", "expected"), [({"message": "no"}, "FATAL"),
                                                    ({"after_s": 5, "timeout_s": 0.05}, "TIMED OUT")])
async def test_fatal_and_timed_out(api: Api, failing: dict[str, Any], expected: str) -> None:
    await api.put_flow(FlowBuilder("zfail").node("in", "start").node("boom", "test.fail", **failing)
                       .node("out", "end").edge("in", "boom").edge("boom", "out").build())
    await launch(api, f"flowUuid=zfail&executionId=fail-{expected}")
    assert (await ended_status(api, f"fail-{expected}"))["terminationStatus"] == expected


async def test_an_execution_id_is_the_idempotency_key(api: Api) -> None:
    await api.put_flow(ECHO)
    first = await launch(api, "flowUuid=zflow&executionId=same", {"who": "a"})
    again = await launch(api, "flowUuid=zflow&executionId=same", {"who": "a"}, status=200)
    assert again["taskId"] == first["taskId"]
    conflict = await launch(api, "flowUuid=zflow&executionId=same", {"who": "b"}, status=409)
    assert conflict["error"]["code"] == "idempotency_conflict"
    made = await launch(api, "flowUuid=zflow")  # no executionId: one is made, to ask the status with
    uuid.UUID(made["executionId"])


async def test_refusals_write_nothing_and_never_echo_the_key(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    await api.put_flow(ECHO)
    caplog.set_level(logging.DEBUG)
    cases = [("executionId=x", 422, "flowUuid"), ("flowUuid=nope", 404, None),
             ("flowUuid=zflow&executionEnvironmentMode=TEST", 422, "executionEnvironmentMode")]
    for query, status, field in cases:
        refused = await launch(api, query, status=status)
        assert refused["error"]["field"] == field and api.token not in str(refused)
    unknown = await api.request("GET", "/api/ziggy/execution-status/never-launched")
    assert unknown.status == 404 and (await unknown.json())["error"]["code"] == "execution_not_found"
    bad_key = await api.client.post("/api?flowUuid=zflow&execution-key=bm9wZTpub3Bl", json={})
    assert bad_key.status == 401
    assert (await api.json("GET", "/api/v1/tasks", 200))["tasks"] == []
    assert not [r for r in caplog.records if api.token in r.getMessage()]


@pytest.mark.postgres
async def test_the_status_lookup_on_postgres(pg_api: Api) -> None:  # noqa: F811  # the imported fixture
    await pg_api.put_flow(ECHO)
    await launch(pg_api, "flowUuid=zflow&executionId=pg-1", {"who": "pg"})
    await launch(pg_api, "flowUuid=zflow&executionId=pg-2", {"who": "other"})
    status = await ended_status(pg_api, "pg-1")
    assert status["terminationStatus"] == "SUCCESS" and status["data"] == {"who": "pg"}
