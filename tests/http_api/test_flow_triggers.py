"""Flow-end triggers: a task of the watched flow that ends with a listed status starts one task of the
watching flow, with the ended task's JSON as its start data; once, across servers and restarts.

Real servers from the production factory on one database file (and on PostgreSQL). Most tests stop
the loops and sweep by hand, so they decide when a sweep happens; one lets the loop find the end.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest

from http_api.settings import Settings
from http_api.trigger_loops import TRIGGER_LOOPS, TriggerLoops
from tests.conftest import Api
from tests.http_api.trigger_support import postgres_settings, server, tasks_of
from tests.support import FlowBuilder, eventually


def watched(flow_id: str = "ingest") -> dict[str, Any]:
    return (FlowBuilder(flow_id).node("in", "start", data={"n": 1}).node("check", "guard", condition=True)
            .node("out", "end").edge("in", "out", input="request").edge("check", "out", output="ok", input="ok")
            .build())


def watcher(flow_id: str = "report", source: str = "ingest", status: list[str] | None = None) -> dict[str, Any]:
    trigger: dict[str, Any] = {"type": "flow", "flow_id": source}
    if status is not None:
        trigger["status"] = status
    return (FlowBuilder(flow_id, triggers=[trigger]).node("in", "start").node("out", "end")
            .edge("in", "out", input="source").build())


async def sweep(api: Api) -> list[int]:
    """One flow-end sweep on ``api``'s server now: the ids of the tasks it created."""
    loops = api.app[TRIGGER_LOOPS]
    return [task.id for task in await loops.flow_end.sweep(datetime.now(UTC), await loops.catalog.refresh())]


async def ended(api: Api, flow_id: str, body: dict[str, Any] | None = None, status: str = "succeeded") -> Any:
    task = await api.execute(flow_id, body)
    return await api.wait_for_status(task["id"], status)


async def test_an_ended_task_starts_the_watching_flow_with_its_json(api: Api) -> None:
    await api.app[TRIGGER_LOOPS].stop()
    await api.put_flow(watched())
    await api.put_flow(watcher())
    source = await ended(api, "ingest")
    [started] = await sweep(api)
    assert await sweep(api) == []
    task = await api.wait_for_status(started, "succeeded")
    assert task["trigger"] == {"type": "flow", "index": 0, "task_id": source["id"]}
    given = task["result"]["source"]
    assert (given["id"], given["status_name"], given["flow_id"]) == (source["id"], "succeeded", "ingest")
    assert given["result"] == source["result"] and given["nodes"].keys() == source["nodes"].keys()
    assert given == {key: value for key, value in source.items()}  # the GET /task/{id} body, as it was


async def test_statuses_filter_the_ends_that_start_a_task(api: Api) -> None:
    await api.app[TRIGGER_LOOPS].stop()
    await api.put_flow(watched())
    await api.put_flow(watcher("on-failure", status=["failed"]))
    await api.put_flow(watcher("on-success", status=["succeeded"]))
    await api.put_flow(watcher("on-any"))  # no status: every end
    failed = await ended(api, "ingest", {"node_settings": {"check": {"condition": False}}}, "failed")
    succeeded = await ended(api, "ingest")
    await sweep(api)
    sources = {flow_id: [t["data"]["trigger"]["task_id"] for t in await tasks_of(api, flow_id)]
               for flow_id in ("on-failure", "on-success", "on-any")}
    assert sources == {"on-failure": [failed["id"]], "on-success": [succeeded["id"]],
                       "on-any": [failed["id"], succeeded["id"]]}


async def test_one_task_per_source_whichever_servers_sweep_and_when(api: Api, aiohttp_client: Any,
                                                                    settings: Settings) -> None:
    await api.app[TRIGGER_LOOPS].stop()
    other = await server(aiohttp_client, settings)
    await api.put_flow(watched())
    await api.put_flow(watcher())
    sources = [await ended(api, "ingest") for _ in range(3)]
    made = await asyncio.gather(sweep(api), sweep(other), sweep(api))
    assert sorted(task_id for ids in made for task_id in ids) == sorted(
        t["id"] for t in await tasks_of(api, "report"))
    assert sorted(t["data"]["trigger"]["task_id"] for t in await tasks_of(api, "report")) == [s["id"] for s in sources]
    restarted = await server(aiohttp_client, settings)  # a process starting anew derives where to look
    assert await sweep(restarted) == []


async def test_an_end_while_no_server_swept_starts_its_task_after_a_restart(api: Api, aiohttp_client: Any,
                                                                           settings: Settings) -> None:
    await api.app[TRIGGER_LOOPS].stop()  # nobody sweeps: as if the API processes were down
    await api.put_flow(watched())
    await api.put_flow(watcher())
    source = await ended(api, "ingest")
    restarted = await server(aiohttp_client, settings)
    [started] = await sweep(restarted)
    assert (await restarted.task(started))["trigger"]["task_id"] == source["id"]


async def test_tasks_that_ended_before_the_trigger_existed_start_nothing(api: Api) -> None:
    await api.app[TRIGGER_LOOPS].stop()
    await api.put_flow(watched())
    await ended(api, "ingest")
    await api.put_flow(watcher())
    assert await sweep(api) == []
    later = await ended(api, "ingest")
    [started] = await sweep(api)
    assert (await api.task(started))["trigger"]["task_id"] == later["id"]


async def test_the_running_loop_sees_an_end_on_its_own(api: Api) -> None:
    await api.put_flow(watched())
    await api.put_flow(watcher())
    api.app[TRIGGER_LOOPS].catalog.expire()
    source = await ended(api, "ingest")

    async def started() -> list[dict[str, Any]]:
        return await tasks_of(api, "report")

    [task] = await eventually(started, timeout=10.0)
    assert task["data"]["trigger"] == {"type": "flow", "index": 0, "task_id": source["id"]}


async def test_task_ended_wakes_the_sweep(api: Api) -> None:
    loops = api.app[TRIGGER_LOOPS]
    await api.put_flow(watched())
    await api.put_flow(watcher())
    loops.catalog.expire()
    source = await ended(api, "ingest")
    await loops.flow_end.task_ended(source["id"])
    [task] = await eventually(lambda: tasks_of(api, "report"), timeout=10.0)
    assert task["data"]["trigger"]["task_id"] == source["id"]


async def test_an_end_in_this_process_wakes_the_sweep_through_the_events_hub(api: Api) -> None:
    await api.app[TRIGGER_LOOPS].stop()
    await api.put_flow(watched())
    await api.put_flow(watcher())
    hourly = TriggerLoops(api.services, round_s=3600.0)  # after its first round, only a wake-up sweeps
    hourly.start()
    try:
        await eventually(lambda: hourly.catalog.refreshed)
        source = await ended(api, "ingest")
        [task] = await eventually(lambda: tasks_of(api, "report"), timeout=10.0)
        assert task["data"]["trigger"]["task_id"] == source["id"]
    finally:
        await hourly.stop()


async def test_a_dev_task_starts_a_dev_task(api: Api) -> None:
    await api.app[TRIGGER_LOOPS].stop()
    await api.put_flow(watched())
    await api.put_flow(watcher())
    await ended(api, "ingest", {"mode": "dev"})
    [started] = await sweep(api)
    assert (await api.task(started))["mode"] == "dev"


@pytest.mark.parametrize(("trigger", "field", "says"), [
    ({"type": "flow", "flow_id": "report"}, None, "cannot start on its own end"),
    ({"type": "flow", "flow_id": "ingest", "status": ["crashed"]}, "triggers.0.status.0", "'succeeded'"),
    ({"type": "flow", "flow_id": "ingest", "status": []}, "triggers.0.status", "at least 1"),
    ({"type": "cron", "flow_id": "ingest"}, "triggers.0", "'webhook', 'schedule', 'flow'"),
])
async def test_a_bad_flow_trigger_is_refused(api: Api, trigger: dict[str, Any], field: str | None, says: str) -> None:
    refused = await api.json("PUT", "/api/v1/flows/report", 422, json={**watcher(), "triggers": [trigger]})
    assert refused["error"]["field"] == field and says in refused["error"]["message"], refused


async def test_triggers_lists_flow_triggers_with_what_they_watch(api: Api) -> None:
    await api.put_flow(watcher(status=["failed", "cancelled"]))
    listed = await api.json("GET", "/api/v1/triggers", 200, token=await api.new_key("execute"))
    [mine] = [t for t in listed["triggers"] if t["flow_id"] == "report"]
    assert mine == {"flow_id": "report", "namespace": "default", "index": 0, "type": "flow", "path": None,
                    "cron": None, "timezone": None, "next": None, "next_slots": [],
                    "watch": {"flow_id": "ingest", "status": ["failed", "cancelled"]}}



pg_settings = pytest.fixture(postgres_settings)


@pytest.mark.postgres
async def test_one_task_per_source_among_three_servers_on_postgres(pg_settings: Settings, aiohttp_client: Any) -> None:
    # pg_settings first: torn down last, once the servers (aiohttp_client) have closed
    servers = [await server(aiohttp_client, pg_settings) for _ in range(3)]
    await servers[0].put_flow(watched())
    await servers[0].put_flow(watcher())
    sources = [await ended(servers[i % 3], "ingest") for i in range(4)]
    await asyncio.gather(*(sweep(each) for each in servers))
    await asyncio.gather(*(sweep(each) for each in servers))
    started = await tasks_of(servers[2], "report")
    assert sorted(t["data"]["trigger"]["task_id"] for t in started) == [s["id"] for s in sources]
