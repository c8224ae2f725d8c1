"""The dashboard's pages in headless Chromium: how long until the page is drawn.

- **task page, 1,000 nodes**: ``#/task/{id}`` of a succeeded task of a 1,000-node chain (start →
  998 ``merge`` → end): the HTML, the ES modules, the task with every node's output
  (``?include=outputs``), the flow's definition, then 1,000 table rows and Gantt bars.
- **flows page, 100 flows**: ``#/flows`` with 100 flows stored (plus the samples).

Each figure is ``performance.mark("page-rendered")`` — set by ``app.js`` after the page's code has
built it and the browser has painted — in ms from the navigation's start, for a fresh load with
an empty cache (a new browser context per run), with the CPU time the page's main thread used by
then (Chromium's ``ThreadTime`` metric): on a shared machine the wall time moves with the load, the
CPU time much less. The server runs in this process on a real SQLite file.

Standalone: ``python -m bench.dashboard [RUNS]`` prints the figures as JSON.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from aiohttp import web
from playwright.async_api import Browser, async_playwright

from http_api import auth
from http_api.app import create_app
from http_api.body import SERVICES
from http_api.services import Services
from http_api.settings import Settings

CHAIN = 1000
FLOWS = 100
TARGETS_MS = {"task_page_1000_nodes": 1000.0, "flows_page_100_flows": 500.0}
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def chain_flow(flow_id: str, size: int) -> dict[str, Any]:
    ids = ["start", *(f"m{i:04d}" for i in range(size - 2)), "end"]
    nodes = [{"id": "start", "type": "start", "settings": {"data": {"n": 1}}},
             *({"id": i, "type": "merge"} for i in ids[1:-1]), {"id": "end", "type": "end"}]
    edges = [{"from": a, "to": b, "input": "x"} for a, b in itertools.pairwise(ids)]
    return {"id": flow_id, "nodes": nodes, "edges": edges}


async def rendered_ms(browser: Browser, base: str, token: str, fragment: str, ready: str) -> tuple[float, float]:
    """(ms from navigation to the page-rendered mark, ms of CPU the page's main thread used meanwhile)."""
    context = await browser.new_context(viewport={"width": 1280, "height": 860})
    try:
        page = await context.new_page()
        cdp = await context.new_cdp_session(page)
        await cdp.send("Performance.enable")
        await context.add_init_script(f"sessionStorage.setItem('graph-runtime.key', {json.dumps(token)})")
        await page.goto(f"{base}/ui/{fragment}")
        await page.locator(ready).wait_for(state="attached", timeout=30_000)
        # Polled from here: the page's CSP (script-src 'self') refuses the string eval wait_for_function uses.
        for _ in range(300):
            mark = await page.evaluate("performance.getEntriesByName('page-rendered').map(m => m.startTime)")
            if mark:
                metrics = {m["name"]: m["value"] for m in (await cdp.send("Performance.getMetrics"))["metrics"]}
                return float(mark[0]), metrics.get("ThreadTime", 0.0) * 1000
            await asyncio.sleep(0.01)
        raise AssertionError(f"{fragment}: no page-rendered mark")
    finally:
        await context.close()


async def measure(runs: int = 5, chromium: str | None = None) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="bench-dashboard-"))
    settings = Settings(database_url=f"sqlite+aiosqlite:///{workdir / 'db.sqlite'}", flows_dir=None,
                        files_dir=workdir / "files", cache_max_bytes=0)
    app = create_app(settings)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        base = f"http://127.0.0.1:{port}"
        services: Services = app[SERVICES]  # type: ignore[assignment]
        _, token = await auth.issue_key(services.repo, "bench", "admin")
        task_id = await _prepare(base, token)
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=chromium or shutil.which("chromium") or "/usr/bin/chromium",
                                              args=CHROMIUM_ARGS)
            figures: dict[str, list[tuple[float, float]]] = {"task_page_1000_nodes": [], "flows_page_100_flows": []}
            for _ in range(runs):
                figures["task_page_1000_nodes"].append(await rendered_ms(
                    browser, base, token, f"#/task/{task_id}", f"#nodes .body [role=row]:nth-child({CHAIN})"))
                figures["flows_page_100_flows"].append(await rendered_ms(
                    browser, base, token, "#/flows", f"main tbody tr:nth-child({FLOWS})"))
            await browser.close()
    finally:
        await runner.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)
    return {name: _summary(name, runs_) for name, runs_ in figures.items()}


def _summary(name: str, runs: list[tuple[float, float]]) -> dict[str, Any]:
    # On a shared machine the wall time moves with the load; the main thread's CPU time much less.
    wall = [w for w, _ in runs]
    return {"median_ms": round(statistics.median(wall), 1), "min_ms": round(min(wall), 1), "max_ms": round(max(wall), 1),
            "main_thread_cpu_median_ms": round(statistics.median(c for _, c in runs), 1),
            "target_ms": TARGETS_MS[name], "met": statistics.median(wall) <= TARGETS_MS[name]}


async def _prepare(base: str, token: str) -> int:
    """100 small flows and one 1,000-node chain run to the end, through the API like a user would."""
    import aiohttp

    headers = {"Authorization": f"Basic {token}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        for i in range(FLOWS):
            flow = chain_flow(f"flow-{i:03d}", 3) | {"name": f"Flow {i}", "description": "A three-node chain."}
            async with http.put(f"{base}/api/v1/flows/{flow['id']}", json=flow) as response:
                assert response.status == 201, await response.text()
        async with http.put(f"{base}/api/v1/flows/chain-1000", json=chain_flow("chain-1000", CHAIN)) as response:
            assert response.status == 201, await response.text()
        async with http.post(f"{base}/api/v1/flow/chain-1000/execute?wait=60", json={}) as response:
            task = await response.json()
        assert task["status_name"] == "succeeded", task
        return int(task["id"])


def main(argv: list[str]) -> int:
    runs = int(argv[0]) if argv else 5
    print(json.dumps(asyncio.run(measure(runs)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
