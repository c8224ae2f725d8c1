"""What the trigger tests share: a second server on the test's database, a PostgreSQL database, task lists."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from http_api import auth
from http_api.app import create_app
from http_api.body import SERVICES
from http_api.settings import Settings
from http_api.trigger_loops import TRIGGER_LOOPS
from tests.conftest import Api
from tests.reliability.cluster import pg_database
from tests.support import registry_with_test_types


async def server(aiohttp_client: Any, settings: Settings) -> Api:
    """Another server from the production factory on ``settings``' database, as another process would
    be, its trigger loops stopped (the test decides when they run)."""
    client = await aiohttp_client(create_app(settings, registry=registry_with_test_types()))
    _, token = await auth.issue_key(client.server.app[SERVICES].repo, "other-admin", "admin")
    other = Api(client, token)
    await other.app[TRIGGER_LOOPS].stop()
    return other


async def tasks_of(api: Api, flow_id: str) -> list[dict[str, Any]]:
    """The flow's tasks, oldest first, with their ``data``."""
    listed = await api.json("GET", "/api/v1/tasks", 200, params={"flow_id": flow_id, "include": "data"})
    return list(reversed(listed["tasks"]))


async def postgres_settings() -> AsyncIterator[Settings]:
    """Settings on a fresh PostgreSQL database, dropped after (the test is skipped without a server)."""
    async with pg_database() as url:
        yield Settings(database_url=url, flows_dir=None, poll_interval_s=0.2)
