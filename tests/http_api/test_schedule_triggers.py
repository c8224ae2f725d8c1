"""Schedule triggers: validated at load, one task per slot across servers, a missed slot runs once.

Real servers from the production factory on one database file (and on PostgreSQL). The loops'
own clock is stopped in each test; the test gives "now" to ``tick``, so no test waits for a minute.
"""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from graph_runtime import cron
from http_api.settings import Settings
from http_api.trigger_loops import TRIGGER_LOOPS, TriggerLoops
from tests.conftest import Api
from tests.http_api.trigger_support import postgres_settings, server, tasks_of
from tests.support import FlowBuilder, eventually

MINUTE = timedelta(minutes=1)


def scheduled(flow_id: str = "nightly", *, cron_text: str = "* * * * *", timezone: str = "UTC",
              **trigger: Any) -> dict[str, Any]:
    return (FlowBuilder(flow_id, triggers=[{"type": "schedule", "cron": cron_text, "timezone": timezone, **trigger}])
            .node("in", "start", data={"fixed": 1}).node("out", "end").edge("in", "out", input="request").build())


async def stopped(api: Api) -> TriggerLoops:
    loops = api.app[TRIGGER_LOOPS]
    await loops.stop()  # the test is the clock
    return loops


async def tick(api: Api, now: datetime) -> list[int]:
    """One schedule round at ``now`` on ``api``'s server: the ids of the tasks it created."""
    loops = api.app[TRIGGER_LOOPS]
    return [task.id for task in await loops.schedule.tick(now, await loops.catalog.refresh())]


def in_minutes(minutes: int) -> datetime:
    """A "now" ``minutes`` ahead, 10 s into its minute: a test's later ticks 30 s on stay in that slot."""
    return floor_minute(datetime.now(UTC)) + minutes * MINUTE + timedelta(seconds=10)


def floor_minute(when: datetime) -> datetime:
    return when.replace(second=0, microsecond=0)


def iso(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@pytest.mark.parametrize(("field", "value", "says"), [
    ("cron", "61 * * * *", "not a valid cron"),
    ("cron", "* * * * * *", "five fields"),
    ("cron", "0 0 30 2 *", "never fires"),
    ("timezone", "Mars/Olympus_Mons", "IANA timezone"),
])
async def test_a_bad_cron_or_timezone_is_refused_naming_the_field(api: Api, field: str, value: str,
                                                                  says: str) -> None:
    refused = await api.json("PUT", "/api/v1/flows/nightly", 422, json=scheduled(**{
        "cron_text" if field == "cron" else field: value}))
    assert refused["error"]["field"] == f"triggers.0.{field}"
    assert says in refused["error"]["message"]
    assert (await api.client.get("/api/v1/flows/nightly", headers=api.headers())).status == 404


async def test_node_settings_must_name_nodes_of_the_flow(api: Api) -> None:
    refused = await api.json("PUT", "/api/v1/flows/nightly", 422,
                             json=scheduled(node_settings={"ghost": {"x": 1}}))
    assert "triggers.0.node_settings: no node has id 'ghost'" in refused["error"]["message"]


async def test_each_slot_starts_one_task_whichever_server_ticks(api: Api, aiohttp_client: Any,
                                                                settings: Settings) -> None:
    await stopped(api)
    other = await server(aiohttp_client, settings)
    await api.put_flow(scheduled(node_settings={"in": {"data": {"from": "schedule"}}}))
    now = in_minutes(2)
    first, second, again = await tick(api, now), await tick(other, now), await tick(other, now + timedelta(seconds=5))
    assert len(first) == 1 and second == [] and again == []
    [task] = await tasks_of(api, "nightly")
    slot = iso(floor_minute(now))
    assert task["data"]["trigger"] == {"type": "schedule", "index": 0, "slot": slot}
    ended = await api.wait_for_status(task["id"], "succeeded")
    assert ended["trigger"] == {"type": "schedule", "index": 0, "slot": slot}
    assert ended["result"]["request"] == {"fixed": 1, "from": "schedule"}  # the trigger's node_settings merged
    assert ended["data"]["node_settings"] == {"in": {"data": {"from": "schedule"}}}


async def test_two_servers_ticking_at_once_start_one_task(api: Api, aiohttp_client: Any, settings: Settings) -> None:
    await stopped(api)
    other = await server(aiohttp_client, settings)
    await api.put_flow(scheduled())
    now = in_minutes(3)
    started = await asyncio.gather(tick(api, now), tick(other, now))
    assert sorted(len(ids) for ids in started) == [0, 1]
    assert len(await tasks_of(api, "nightly")) == 1


async def test_after_downtime_only_the_latest_missed_slot_runs_and_only_once(api: Api, aiohttp_client: Any,
                                                                             settings: Settings) -> None:
    await stopped(api)
    await api.put_flow(scheduled())
    back = in_minutes(10)  # ten slots passed while "down"
    assert len(await tick(api, back)) == 1
    restarted = await server(aiohttp_client, settings)  # a process starting anew finds the slot done
    assert await tick(restarted, back + timedelta(seconds=30)) == []
    assert len(await tick(restarted, back + 2 * MINUTE)) == 1  # two more missed: the latest, once
    slots = [task["data"]["trigger"]["slot"] for task in await tasks_of(api, "nightly")]
    assert slots == [iso(floor_minute(back)), iso(floor_minute(back + 2 * MINUTE))]


async def test_a_slot_before_the_flow_was_stored_does_not_run(api: Api) -> None:
    await stopped(api)
    put = await api.put_flow(scheduled(cron_text="@hourly"))
    stored = datetime.fromisoformat(put["updated"].replace("Z", "+00:00"))
    assert await tick(api, stored) == []  # the hour that began before it existed
    assert len(await tick(api, floor_minute(stored).replace(minute=0) + timedelta(hours=1))) == 1


async def test_cron_times_are_wall_clock_times_in_the_trigger_timezone(api: Api) -> None:
    await stopped(api)
    await api.put_flow(scheduled(cron_text="30 9 * * *", timezone="America/New_York"))
    now = datetime.now(UTC) + timedelta(days=3)
    [task_id] = await tick(api, now)
    local = now.astimezone(ZoneInfo("America/New_York"))
    expected = local.replace(hour=9, minute=30, second=0, microsecond=0)
    if expected > local:
        expected = (local - timedelta(days=1)).replace(hour=9, minute=30, second=0, microsecond=0)
    assert (await api.task(task_id))["trigger"]["slot"] == iso(expected)


def test_daylight_saving_gaps_and_overlaps_follow_the_library() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    # 02:30 does not exist on 2026-03-29 in Berlin (02:00 -> 03:00): that day's slot is 03:00 local.
    [spring] = cron.next_slots("30 2 * * *", "Europe/Berlin", datetime(2026, 3, 29, 0, 0, tzinfo=berlin))
    assert spring.astimezone(berlin).replace(tzinfo=None) == datetime(2026, 3, 29, 3, 0)
    # 02:30 happens twice on 2026-10-25 (03:00 -> 02:00): two instants, so two slots an hour apart.
    first, second = cron.next_slots("30 2 * * *", "Europe/Berlin", datetime(2026, 10, 25, 0, 0, tzinfo=berlin), 2)
    assert second - first == timedelta(hours=1)
    assert cron.latest_slot("*/15 * * * *", "UTC", datetime(2026, 1, 1, 10, 15, tzinfo=UTC)) == \
        datetime(2026, 1, 1, 10, 15, tzinfo=UTC)  # a "now" exactly on a slot is that slot


async def test_triggers_lists_schedules_with_their_next_slots(api: Api) -> None:
    await api.put_flow(scheduled(cron_text="0 */6 * * *", timezone="Asia/Tokyo"))
    before = datetime.now(UTC)
    listed = await api.json("GET", "/api/v1/triggers", 200, token=await api.new_key("execute"))
    [mine] = [t for t in listed["triggers"] if t["flow_id"] == "nightly"]
    assert (mine["type"], mine["cron"], mine["timezone"], mine["path"], mine["watch"]) == \
        ("schedule", "0 */6 * * *", "Asia/Tokyo", None, None)
    slots = [datetime.fromisoformat(slot.replace("Z", "+00:00")) for slot in mine["next_slots"]]
    assert mine["next"] == mine["next_slots"][0] and len(slots) == 3
    assert before < slots[0] <= before + timedelta(hours=6)
    assert [b - a for a, b in itertools.pairwise(slots)] == [timedelta(hours=6)] * 2
    assert all(slot.astimezone(ZoneInfo("Asia/Tokyo")).hour % 6 == 0 for slot in slots)


async def test_an_executed_task_has_no_trigger_and_scades_data_echo(api: Api) -> None:
    await api.put_flow(scheduled())
    task = await api.execute("nightly")
    assert task["trigger"] is None and "trigger" not in task["data"]


async def test_a_refused_slot_is_logged_and_the_loop_goes_on(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    await stopped(api)
    flow = scheduled(node_settings={"in": {"data": {"x": 1}, "timeout_s": -1}})  # refused when the task is made
    await api.put_flow(flow)
    now = in_minutes(2)
    assert await tick(api, now) == []
    assert await tick(api, now + timedelta(seconds=5)) == []  # the same slot is not tried again
    warned = [r for r in caplog.records if getattr(r, "action", None) == "trigger_refused"]
    assert len(warned) == 1 and "nightly" in warned[0].getMessage()
    await api.put_flow(scheduled())
    assert len(await tick(api, now + MINUTE)) == 1


async def test_the_loop_fires_on_its_own_clock(api: Api) -> None:
    """The running loop, not a test's tick: a flow whose cron matches every minute gets the current
    slot once the loop's clock is past it (the test moves the loop's clock, not the machine's)."""
    loops = api.app[TRIGGER_LOOPS]
    await api.put_flow(scheduled())
    ahead = datetime.now(UTC) + 2 * MINUTE
    loops.schedule.clock = lambda: ahead
    loops.catalog.expire()

    async def started() -> list[dict[str, Any]]:
        return await tasks_of(api, "nightly")

    [task] = await eventually(started)
    assert task["data"]["trigger"]["slot"] == iso(floor_minute(ahead))



pg_settings = pytest.fixture(postgres_settings)


@pytest.mark.postgres
async def test_one_task_per_slot_among_three_servers_on_postgres(pg_settings: Settings, aiohttp_client: Any) -> None:
    # pg_settings first: torn down last, once the servers (aiohttp_client) have closed
    servers = [await server(aiohttp_client, pg_settings) for _ in range(3)]
    await servers[0].put_flow(scheduled())
    now = datetime.now(UTC) + 2 * MINUTE
    for _ in range(3):  # three rounds, each on every server at once
        started = await asyncio.gather(*(tick(each, now) for each in servers))
        now += MINUTE
        assert sum(len(ids) for ids in started) == 1
    assert len(await tasks_of(servers[1], "nightly")) == 3
