"""The client pointed at the real server of ``tests/conftest.py``'s ``api`` fixture."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from graph_runtime_client import AsyncClient
from tests.conftest import Api


def server_url(api: Api) -> str:
    return str(api.client.make_url("")).rstrip("/")


@pytest_asyncio.fixture
async def gr(api: Api) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(server_url(api), api.token) as client:
        yield client
