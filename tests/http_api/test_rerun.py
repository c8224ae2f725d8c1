"""Rerun from a node (SPEC §9): execute's ``from_task_id`` feeds the run set from an earlier task."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from graph_runtime import selection
from graph_runtime.models import TaskRequest
from http_api import auth
from http_api.app import create_app
from http_api.body import SERVICES
from http_api.settings import Settings
from tests import pg
from tests.conftest import SAMPLE_FLOWS, Api
from tests.support import FlowBuilder


def chain(flow_id: str = "chain", *, a_template: str = "{{ text }}!", b_template: str = "{{ text }}?") -> dict[str, Any]:
    """s → a → b, each edge carrying ``text``."""
    return (FlowBuilder(flow_id, defaults={"end_node_id": "b"})
            .node("s", "start", data={"text": "hi"})
            .node("a", "template", template=a_template)
            .node("b", "template", template=b_template)
            .edge("s", "a", output="text", input="text")
            .edge("a", "b", output="text", input="text")
            .build())


async def run(api: Api, flow_id: str, body: dict[str, Any] | None = None) -> Any:
    return await api.execute(flow_id, body or {}, params={"wait": "10"})


async def rerun(api: Api, flow_id: str, task_id: int, status: int = 201, **body: Any) -> Any:
    body = {"start_node_id": "b", "from_task_id": task_id, **body}
    if status != 201:
        return await api.execute(flow_id, body, status=status)
    return await api.execute(flow_id, body, params={"wait": "10"})


async def test_only_the_start_node_runs_with_its_input_from_the_earlier_task(api: Api) -> None:
    await api.put_flow(chain())
    first = await run(api, "chain")
    assert first["result"] == {"text": "hi!?"}
    again = await rerun(api, "chain", first["id"], node_settings={"b": {"template": "{{ text }}#"}})
    assert again["status_name"] == "succeeded", again
    assert again["result"] == {"text": "hi!#"}
    assert set(again["nodes"]) == {"b"}
    assert again["data"]["from_task_id"] == first["id"]
    assert again["data"]["from_task_inputs"] == {"b": {"text": "hi!"}}


async def test_the_stored_request_is_self_contained(api: Api) -> None:
    await api.put_flow(chain())
    first = await run(api, "chain")
    again = await rerun(api, "chain", first["id"])
    stored = await api.services.repo.get_task(again["id"])
    assert stored.request == TaskRequest.from_data(stored.request.as_data())
    # What a worker resuming the task plans from: the stored request alone, no read of the first task.
    flow, _, _ = await api.services.repo.get_flow("chain", stored.revision)
    plan = selection.plan(flow, api.services.registry, stored.request)
    assert plan.order == ("b",) and plan.settings["b"]["text"] == "hi!"


async def test_a_whole_output_edge_takes_the_whole_object(api: Api) -> None:
    flow = (FlowBuilder("whole", defaults={"end_node_id": "b"}).node("s", "start", data={"x": 1, "y": [2]})
            .node("a", "test.echo").node("b", "test.echo").edge("s", "a", input="in").edge("a", "b").build())
    await api.put_flow(flow)
    first = await run(api, "whole")
    again = await rerun(api, "whole", first["id"])
    assert again["result"] == {"a": {"in": {"x": 1, "y": [2]}}}


async def test_node_settings_win_over_the_earlier_task(api: Api) -> None:
    await api.put_flow(chain())
    first = await run(api, "chain")
    again = await rerun(api, "chain", first["id"], node_settings={"b": {"text": "given"}})
    assert again["result"] == {"text": "given?"}
    assert again["data"]["from_task_inputs"] == {}


async def test_another_revision_with_the_upstream_unchanged(api: Api) -> None:
    await api.put_flow(chain())
    first = await run(api, "chain")
    await api.put_flow(chain(b_template="{{ text }}~"))  # only the rerun node changed
    again = await rerun(api, "chain", first["id"])
    assert again["result"] == {"text": "hi!~"}


async def test_another_revision_with_the_upstream_changed_is_refused(api: Api) -> None:
    await api.put_flow(chain())
    first = await run(api, "chain")
    await api.put_flow(chain(a_template="{{ text }}."))
    error = (await rerun(api, "chain", first["id"], status=422))["error"]
    assert error["field"] == "from_task_id" and "'a'" in error["message"]
    assert await api.services.repo.count_tasks() == 1


async def test_an_upstream_node_new_in_this_revision_is_refused(api: Api) -> None:
    flow = chain()
    flow["nodes"] = [node for node in flow["nodes"] if node["id"] != "a"]
    flow["edges"] = [{"from": "s", "output": "text", "to": "b", "input": "text"}]
    await api.put_flow(flow)
    first = await run(api, "chain")
    await api.put_flow(chain())  # now s → a → b: b's input comes from a, which task 1 never had
    error = (await rerun(api, "chain", first["id"], status=422))["error"]
    assert error["field"] == "from_task_id" and "'a' did not exist in revision 1" in error["message"]


async def test_a_rerun_task_holds_only_its_run_set(api: Api) -> None:
    await api.put_flow(chain())
    first = await run(api, "chain")
    again = await rerun(api, "chain", first["id"])
    error = (await rerun(api, "chain", again["id"], status=422))["error"]
    assert error["code"] == "missing_inputs" and "node(s) a " in error["message"]


async def test_a_task_of_another_flow_or_none_is_refused(api: Api) -> None:
    await api.put_flow(chain())
    await api.put_flow(chain("other"))
    other = await run(api, "other")
    for task_id in (other["id"], 999999):
        error = (await rerun(api, "chain", task_id, status=422))["error"]
        assert error["field"] == "from_task_id" and error["code"] == "invalid_selection", error
        assert f"no task {task_id}" in error["message"]
    assert await api.services.repo.count_tasks() == 1


async def test_an_upstream_without_output_is_named(api: Api) -> None:
    flow = (FlowBuilder("failing", defaults={"end_node_id": "b"}).node("s", "start", data={"x": 1})
            .node("f", "test.fail").node("b", "test.echo").edge("s", "f").edge("f", "b", output="attempt").build())
    await api.put_flow(flow)
    first = await run(api, "failing")
    assert first["status_name"] == "failed"
    error = (await api.execute("failing", {"start_node_id": "b", "from_task_id": first["id"]}, status=422))["error"]
    assert error["code"] == "missing_inputs" and error["field"] == "from_task_id"
    assert "node(s) f " in error["message"]
    assert error["missing"] == [{"node_id": "b", "input": "f", "from": "f"}]
    assert await api.services.repo.count_tasks() == 1


async def test_bad_from_task_ids_are_422(api: Api) -> None:
    await api.put_flow(chain())
    for value in (0, -1, "1", 1.5, True):
        error = (await api.execute("chain", {"from_task_id": value}, status=422))["error"]
        assert error["field"] == "from_task_id", (value, error)


async def test_idempotency_fingerprint_includes_from_task_id(api: Api) -> None:
    await api.put_flow(chain())
    first = await run(api, "chain")
    second = await run(api, "chain")
    headers = {"Idempotency-Key": "rerun-1"}
    await api.execute("chain", {"start_node_id": "b", "from_task_id": first["id"]}, headers=headers)
    conflict = await api.execute("chain", {"start_node_id": "b", "from_task_id": second["id"]}, status=409,
                                 headers=headers)
    assert conflict["error"]["code"] == "idempotency_conflict"


@pytest.fixture
async def pg_api(aiohttp_client: Any) -> AsyncIterator[Api]:
    """The sample flows served from a fresh PostgreSQL database."""
    user, reason = await pg.find_user()
    if user is None:
        pytest.skip(f"PostgreSQL is not reachable at {pg.PG_HOST} ({reason})")
    url = await pg.create_database(user)
    try:
        client = await aiohttp_client(create_app(Settings(database_url=url, flows_dir=SAMPLE_FLOWS, poll_interval_s=0.2)))
        _, token = await auth.issue_key(client.server.app[SERVICES].repo, "pg-admin", "admin")
        yield Api(client, token)
        await client.close()
    finally:
        await pg.drop_database(url)


@pytest.mark.postgres
async def test_the_readme_example_on_postgres(pg_api: Api) -> None:
    await test_the_readme_example_on_caption_image(pg_api)


async def test_the_readme_example_on_caption_image(api: Api) -> None:
    data = {"image_url": "https://example.com/dog.jpg", "style": "long"}
    first = await run(api, "caption-image", {"node_settings": {"SYnn-start": {"data": data}}})
    again = await api.execute("caption-image", {
        "start_node_id": "prompt", "from_task_id": first["id"],
        "node_settings": {"prompt": {"template": "A {{ style }} caption for {{ image_url }}."}}}, params={"wait": "10"})
    assert set(again["nodes"]) == {"prompt", "y5iI-end"}
    assert again["result"]["caption"] == "A long caption for https://example.com/dog.jpg."
    assert again["result"]["request"] == first["result"]["request"]
