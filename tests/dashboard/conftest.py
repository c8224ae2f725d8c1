"""A real Chromium (Debian's, headless) driven by Playwright against the real server of ``api``.

Playwright's async API runs in the test's event loop beside the aiohttp server, so a test can
drive the page and read the database in one place. Screenshots go to a temp dir, or to
``GRAPH_RUNTIME_SCREENSHOTS`` when set (how docs/*.png were made).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import pytest_asyncio

from tests.conftest import Api

playwright_api = pytest.importorskip("playwright.async_api")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    chosen = os.environ.get("GRAPH_RUNTIME_SCREENSHOTS")
    path = Path(chosen) if chosen else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


class Browser:
    """A page on the dashboard, signed in or not, that records every URL the page asked for."""

    def __init__(self, page: Any, base: str, shots: Path) -> None:
        self.page = page
        self.base = base
        self.shots = shots
        self.requested: list[str] = []
        self.console_errors: list[str] = []
        page.on("request", lambda request: self.requested.append(request.url))
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.console_errors.append(str(exc)))

    def _console(self, message: Any) -> None:
        # An API's 4xx is logged by Chromium as "Failed to load resource": expected, and shown by the page.
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            self.console_errors.append(message.text)

    async def open(self, fragment: str = "") -> None:
        await self.page.goto(f"{self.base}/ui/{fragment}")

    async def sign_in(self, token: str) -> None:
        await self.open()
        await self.page.get_by_label("Server key").fill(token)
        await self.page.get_by_role("button", name="Sign in").click()
        await self.page.get_by_role("heading", name="Flows").wait_for()

    async def shot(self, name: str) -> Path:
        path = self.shots / f"{name}.png"
        await self.page.screenshot(path=str(path), full_page=True)
        return path

    def foreign_requests(self) -> list[str]:
        """URLs the page requested from any host but the server."""
        host = urlsplit(self.base).netloc
        return [url for url in self.requested if urlsplit(url).netloc != host and not url.startswith(("data:", "blob:"))]


@pytest_asyncio.fixture
async def browser(api: Api, screenshots: Path) -> AsyncIterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: apt-get install chromium (.ci/run does)")
    async with playwright_api.async_playwright() as p:
        chromium = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            context = await chromium.new_context(viewport={"width": 1280, "height": 860})
            context.set_default_timeout(10_000)
            page = await context.new_page()
            base = str(api.client.make_url("")).rstrip("/")
            driver = Browser(page, base, screenshots)
            yield driver
            assert not driver.console_errors, driver.console_errors
            assert not driver.foreign_requests(), driver.foreign_requests()
        finally:
            await chromium.close()
