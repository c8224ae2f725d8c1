"""A task's stored events read back as they were sent, whatever happened to its rows since, on
SQLite and PostgreSQL; and a task whose start fails still has its events (its end, its cancel)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest

from graph_runtime import errors
from graph_runtime.commits import GroupCommitter
from graph_runtime.events import EventHub, TaskEvent
from graph_runtime.executor import Executor
from graph_runtime.flow import parse
from graph_runtime.models import NodeRun, TaskRequest, TaskStatus
from http_api.views import event_view
from nodes import codec
from nodes.registry import default_registry
from storage.repository import Repository
from storage.task_events import TaskEventLog
from tests.storage.conftest import make_request
from tests.support import FlowBuilder

# ``test.echo`` is a type of the tests' registry, not of the default one: run with the default,
# the plan of this flow fails as it does on a server where a node type was uninstalled.
GONE = parse(FlowBuilder("gone").node("s", "start", data={"x": 1}).node("z", "test.echo").node("a", "test.echo")
             .node("e", "end").edge("s", "z").edge("z", "a").edge("a", "e").build())


def _json(event: TaskEvent) -> dict[str, Any]:
    return json.loads(codec.dumps(event_view(event.kind, event.data)))


async def test_a_start_event_reads_back_as_sent_after_its_task_was_requeued_and_claimed_again(
        repo: Repository, saved_flow: Callable[..., Any]) -> None:
    """A release clears the task's ``started`` and the next claim sets another: the first claim's
    start event keeps the time it was sent with."""
    await saved_flow()
    created = (await repo.create_task("demo", 1, make_request(), node_ids=["start", "end"]))[0]
    claimed = await repo.claim_task(created.id, "w1", lease_s=60)
    assert claimed is not None and claimed.claims == 1
    claimed.nodes = {"start": NodeRun("start"), "end": NodeRun("end")}  # what prepare gives a first claim
    hub = EventHub(GroupCommitter(repo), TaskEventLog(repo.engine))
    try:
        await hub.task_started(claimed)
        await hub.flush()
        sent = _json((await hub.history(created.id))[0])
        if (storing := hub.task_stopped(claimed)) is not None:
            await storing
        assert await repo.release_tasks("w1", [created.id]) == 1
        assert _json((await hub.history(created.id))[0]) == sent, "while queued again"
        await asyncio.sleep(0.01)
        again = await repo.claim_task(created.id, "w2", lease_s=60)
        assert again is not None and again.claims == 2 and again.started != claimed.started
        assert _json((await hub.history(created.id))[0]) == sent, "after another claim"
        assert sent["started"] is not None and sent["nodes"] == {"start": sent["nodes"]["start"], "end": sent["nodes"]["end"]}
    finally:
        await hub.close()


async def test_a_task_whose_plan_fails_streams_the_same_events_live_and_later(repo: Repository) -> None:
    """The first claim of a task that cannot run here (a node type gone): it ends ``failed``, with
    a start and a final event, and a late reader sees what a live one saw."""
    await repo.save_flow(GONE)
    created = (await repo.create_task("gone", 1, TaskRequest("s", "e", "e"), node_ids=["s", "z", "a", "e"]))[0]
    claimed = await repo.claim_task(created.id, "w1", lease_s=60)
    assert claimed is not None
    hub = EventHub(GroupCommitter(repo), TaskEventLog(repo.engine))
    seen: list[TaskEvent] = []

    async def collect() -> None:
        async for event in hub.subscribe(claimed.id):
            assert event is not None
            seen.append(event)

    try:
        reader = asyncio.ensure_future(collect())
        await asyncio.sleep(0.05)
        ended = await Executor(repo, default_registry(), events=hub).execute(claimed)
        await asyncio.wait_for(reader, 5)
        assert ended.status is TaskStatus.FAILED
        live = [_json(e) for e in seen]
        assert [e["status_name"] for e in live] == ["running", "failed"]
        assert [_json(e) for e in await hub.history(claimed.id)] == live
    finally:
        await hub.close()


class _SlowFlows(Repository):
    async def load_flow(self, flow_id: str, revision: int) -> Any:
        await asyncio.sleep(30)
        return await super().load_flow(flow_id, revision)


class _LogAway(TaskEventLog):
    async def last_seq(self, task_id: int) -> int:
        raise errors.StoreUnavailable("the database is away")


async def test_a_stop_while_a_resumed_task_loads_its_flow_is_not_swallowed(
        make_repository: Callable[..., Any], saved_flow: Callable[..., Any]) -> None:
    """A shutdown cancel during the task's preparation goes on (the task resumes after the
    restart), even when its events' stream cannot be started because the database is away."""
    repo: Repository = make_repository(_SlowFlows)
    await saved_flow()
    created = (await repo.create_task("demo", 1, make_request(), node_ids=["start", "end"]))[0]
    assert await repo.claim_task(created.id, "w0", lease_s=60) is not None
    await repo.release_tasks("w0", [created.id])
    claimed = await repo.claim_task(created.id, "w1", lease_s=60)
    assert claimed is not None and claimed.claims == 2  # a resume: its stream reads where its events stand
    hub = EventHub(GroupCommitter(repo), _LogAway(repo.engine))
    running = asyncio.ensure_future(Executor(repo, default_registry(), events=hub).execute(claimed))
    await asyncio.sleep(0.2)  # in prepare, loading the flow
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(running, 10)
