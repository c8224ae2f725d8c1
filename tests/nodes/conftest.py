"""Fixtures of the node tests: the OpenAI-compatible stand-in on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from tests.openai_standin import STANDIN, StandIn, make_app


@dataclass
class Server:
    state: StandIn
    base_url: str  # …/v1
    port: int


@pytest.fixture
async def standin(aiohttp_server) -> AsyncIterator[Server]:
    server = await aiohttp_server(make_app())
    state = server.app[STANDIN]
    state.base_url = str(server.make_url("")).rstrip("/")
    yield Server(state, f"{state.base_url}/v1", server.port)
