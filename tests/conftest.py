"""Fixtures: a real SQLite file per test, a real server from the production factory, keys."""

from __future__ import annotations

import base64
import compileall
import logging
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import ClientResponse

from http_api import auth
from http_api.app import create_app
from http_api.body import SERVICES
from http_api.settings import Settings
from storage import engine as storage_engine
from storage.files import LocalFileStore
from tests.support import Blocking, Echo, Sleep, eventually, registry_with_test_types

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_FLOWS = ROOT / "sample_flows"


def pytest_configure(config: pytest.Config) -> None:
    """Compile the project's modules once, up front: the suite starts some three hundred server,
    worker and CLI processes, and where ``PYTHONDONTWRITEBYTECODE`` is set (this machine's image sets
    it) each of them compiled our 150 modules from source again, 0.4–0.6 s of CPU apiece."""
    if not hasattr(config, "workerinput"):  # the xdist controller, or a run without xdist
        for package in ("graph_runtime", "nodes", "storage", "http_api", "graph_runtime_client", "bench", "tests"):
            compileall.compile_dir(ROOT / package, quiet=1)


@pytest.fixture(autouse=True)
def no_error_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """A 500 or an ERROR log during a test fails it."""
    caplog.set_level(logging.INFO)
    yield
    errors = [r for r in caplog.get_records("call") if r.levelno >= logging.ERROR]
    assert not errors, "ERROR logged: " + "; ".join(r.getMessage() for r in errors)


@pytest.fixture(autouse=True)
def reset_test_nodes() -> None:
    Echo.runs.clear()
    Blocking.stopped.clear()
    Sleep.concurrent = Sleep.peak = 0


@pytest.fixture(scope="session")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file with the schema loaded, created once and copied per test (milliseconds)."""
    import asyncio

    path = tmp_path_factory.mktemp("template") / "template.db"

    async def build() -> None:
        engine = storage_engine.create_engine(f"sqlite+aiosqlite:///{path}")
        await storage_engine.create_schema(engine)
        await storage_engine.dispose(engine)

    asyncio.run(build())
    return path


@pytest.fixture
def db_url(template_db: Path, tmp_path: Path) -> str:
    target = tmp_path / "graph_runtime.db"
    shutil.copy(template_db, target)
    return f"sqlite+aiosqlite:///{target}"


@pytest_asyncio.fixture
async def file_store(db_url: str, tmp_path: Path) -> AsyncIterator[LocalFileStore]:
    """A real file store: blobs under ``tmp_path/files``, records in the test's SQLite file (``db_url``)."""
    engine = storage_engine.create_engine(db_url)
    try:
        yield LocalFileStore(tmp_path / "files", engine)
    finally:
        await storage_engine.dispose(engine)


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return Settings(database_url=db_url, flows_dir=SAMPLE_FLOWS, poll_interval_s=0.2, http_allow_private=True,
                    files_dir=tmp_path / "files")


class Api:
    """A client bound to a running server and an admin token, with JSON helpers."""

    def __init__(self, client: Any, token: str) -> None:
        self.client = client
        self.token = token
        self.app = client.server.app

    @property
    def services(self) -> Any:
        return self.app[SERVICES]

    def headers(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Basic {token or self.token}"}

    async def request(self, method: str, path: str, *, token: str | None = None, **kwargs: Any) -> ClientResponse:
        headers = {**self.headers(token), **kwargs.pop("headers", {})}
        return await self.client.request(method, path, headers=headers, **kwargs)

    async def json(self, method: str, path: str, status: int | None, **kwargs: Any) -> Any:
        """The JSON answer, checking the status unless ``status`` is None."""
        response = await self.request(method, path, **kwargs)
        body = await response.json()
        assert status is None or response.status == status, (response.status, body)
        return body

    async def execute(self, flow_id: str, body: dict[str, Any] | None = None, status: int | None = 201,
                      **kwargs: Any) -> Any:
        return await self.json("POST", f"/api/v1/flow/{flow_id}/execute", status, json=body or {}, **kwargs)

    async def task(self, task_id: int) -> Any:
        return await self.json("GET", f"/api/v1/task/{task_id}", 200)

    async def wait_for_status(self, task_id: int, *names: str, timeout: float = 15.0) -> Any:
        async def ended() -> Any:
            task = await self.task(task_id)
            return task if task["status_name"] in names else None

        return await eventually(ended, timeout=timeout)

    async def put_flow(self, definition: dict[str, Any], status: int = 201) -> Any:
        return await self.json("PUT", f"/api/v1/flows/{definition['id']}", status, json=definition)

    async def new_key(self, scope: str) -> str:
        _, token = await auth.issue_key(self.services.repo, f"test-{scope}", scope)
        return token


@pytest_asyncio.fixture
async def api(aiohttp_client: Any, settings: Settings) -> AsyncIterator[Api]:
    """A real server on a port, built by the production factory, and an admin key."""
    client = await aiohttp_client(create_app(settings, registry=registry_with_test_types()))
    _, token = await auth.issue_key(client.server.app[SERVICES].repo, "test-admin", "admin")
    yield Api(client, token)


def basic(key_id: str, secret: str) -> str:
    return base64.b64encode(f"{key_id}:{secret}".encode()).decode()
