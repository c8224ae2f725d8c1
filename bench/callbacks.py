"""Callback delivery (issue 12, SPEC §11): signed deliveries per second to a local receiver.

Ours: the server's dispatcher (:class:`http_api.callbacks.CallbackDispatcher`) on a SQLite file,
from tasks that ended to every receiver's 2xx recorded: the sweep that finds them, the claims, the
task JSON read per task, the Standard Webhooks signature, the POST through the SSRF-guarded session
and the attempt rows. The tasks end by being cancelled while queued (cheap to make, and an ended
task's JSON is what is sent whatever its status). The floor: the same bodies POSTed to the same
receiver at the same concurrency with a plain aiohttp session, nothing read, signed or recorded.
The receiver runs in this process (its CPU counts against both).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
from aiohttp import web

from bench.cases import Case, Sizes
from bench.figures import Figure
from bench.results import FLOOR, OURS, Row, Target
from graph_runtime import flow as flows
from http_api import callbacks, heap
from http_api.app import close_services, open_services
from http_api.schemas import ExecuteBody
from http_api.services import Services, submit
from http_api.settings import Settings
from http_api.views import task_view
from nodes import codec

FLOW_ID = "bench-callbacks"
FLOW = {"id": FLOW_ID, "nodes": [{"id": "in", "type": "start"}, {"id": "out", "type": "end"}],
        "edges": [{"from": "in", "to": "out", "input": "request"}]}
TARGET_PER_S = 500.0


async def measure(sizes: Sizes, workdir: Path, case: Case) -> Row:
    received = 0

    async def take(request: web.Request) -> web.Response:
        nonlocal received
        await request.read()
        received += 1
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", take)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    settings = Settings(database_url=f"sqlite+aiosqlite:///{workdir / 'callbacks.db'}", flows_dir=None,
                        log_level="WARNING", http_allow_private=True)
    services = await open_services(settings)  # its dispatcher is not started: the bench drives it
    heap.settle()
    row = Row(case, "deliveries/s")
    try:
        await services.repo.save_flow(flows.parse(FLOW))
        dispatcher = services.callbacks
        await dispatcher.store.sweep()  # the state row and the secret exist before timing
        await dispatcher.store.signing_secret(services.cipher)
        n = sizes.callback_deliveries
        for repeat in range(sizes.repeats):
            bodies = await _ended_tasks(services, url, n)
            if repeat % 2:  # the order alternates: neither always runs on a warmer machine
                row.figure(FLOOR).add(await _floor(url, bodies))
            before = received
            started = time.perf_counter()
            while received - before < len(bodies):
                await dispatcher.run_once()
            row.figure(OURS).add(len(bodies) / (time.perf_counter() - started))
            if not repeat % 2:
                row.figure(FLOOR).add(await _floor(url, bodies))
    finally:
        await close_services(services)
        await runner.cleanup()
    ours: Figure = row.figure(OURS)
    row.targets.append(Target(f"≥ {TARGET_PER_S:.0f} deliveries/s to a local receiver", ours.median, TARGET_PER_S,
                              at_most=False))
    row.extra.update({"deliveries per run": sizes.callback_deliveries, "concurrency": callbacks.CONCURRENCY,
                      "batch": callbacks.BATCH})
    row.notes.append("ours: ended tasks → sweep, claim, task JSON, Standard Webhooks signature, POST through the SSRF "
                     "guard, attempt rows (SQLite); floor: the same bodies POSTed by plain aiohttp, same concurrency")
    return row


async def _ended_tasks(services: Services, url: str, count: int) -> list[bytes]:
    """``count`` tasks with a callback to ``url``, ended (cancelled while queued); their JSON bodies."""
    bodies = []
    for _ in range(count):
        task, _ = await submit(services, FLOW_ID, ExecuteBody(callback_url=url), raw_body={})
        bodies.append(codec.dumps(task_view(await services.repo.request_cancel(task.id))))
    return bodies


async def _floor(url: str, bodies: list[bytes]) -> float:
    gate = asyncio.Semaphore(callbacks.CONCURRENCY)

    async def post(session: aiohttp.ClientSession, body: bytes) -> None:
        async with gate, session.post(url, data=body, headers={"Content-Type": "application/json"}) as resp:
            await resp.read()

    async with aiohttp.ClientSession() as session:
        started = time.perf_counter()
        await asyncio.gather(*(post(session, body) for body in bodies))
        return len(bodies) / (time.perf_counter() - started)
