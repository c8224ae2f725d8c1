"""The same API on PostgreSQL: switching GRAPH_RUNTIME_DATABASE_URL is all it takes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from http_api import auth
from http_api.app import create_app
from http_api.body import SERVICES
from http_api.settings import Settings
from tests import pg
from tests.conftest import SAMPLE_FLOWS, Api
from tests.http_api.test_execute import SCADE_BODY

pytestmark = pytest.mark.postgres


@pytest.fixture
async def pg_api(aiohttp_client: Any) -> AsyncIterator[Api]:
    user, reason = await pg.find_user()
    if user is None:
        pytest.skip(f"PostgreSQL is not reachable at {pg.PG_HOST} ({reason})")
    url = await pg.create_database(user)
    try:
        settings = Settings(database_url=url, flows_dir=SAMPLE_FLOWS, poll_interval_s=0.2)
        client = await aiohttp_client(create_app(settings))
        _, token = await auth.issue_key(client.server.app[SERVICES].repo, "pg-admin", "admin")
        yield Api(client, token)
        await client.close()
    finally:
        await pg.drop_database(url)


async def test_scade_flow_end_to_end_on_postgres(pg_api: Api) -> None:
    response = await pg_api.request("POST", "/api/v1/scade/flow/caption-image/execute", json=SCADE_BODY)
    assert response.status == 200
    task = await pg_api.wait_for_status((await response.json())["id"], "succeeded")
    assert task["result"]["caption"].endswith("long sentence.")
    assert task["execution_time"] > 0 and task["ref_id"] == "flow:caption-image;"


async def test_parallel_branches_and_history_on_postgres(pg_api: Api) -> None:
    task = await pg_api.execute("fan-out-fan-in", params={"wait": "10"})
    assert task["status"] == 3 and len(task["nodes"]) == 6
    listed = await pg_api.json("GET", "/api/v1/tasks", 200, params={"flow_id": "fan-out-fan-in"})
    assert [t["id"] for t in listed["tasks"]] == [task["id"]]
    missing = await pg_api.execute("caption-image", {"node_settings": {"ghost": {}}}, status=422)
    assert missing["error"]["field"] == "node_settings.ghost"
    assert await pg_api.services.repo.count_tasks() == 1
