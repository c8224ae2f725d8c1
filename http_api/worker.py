"""``graph-runtime worker``: a process that runs tasks and serves no HTTP (SPEC §10).

Beside ``serve --workers 0`` (API processes that never run node code), workers on as many
machines as needed share one database: each claims queued tasks, holds them under a lease
renewed by its heartbeat, and its writes are fenced by that lease. SIGTERM/SIGINT drain it: no
new task is claimed, running nodes get ``SHUTDOWN_GRACE_S`` to finish, and what is left goes
back to the queue for another worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal

from http_api.app import close_services, open_services
from http_api.settings import Settings


async def run_worker(settings: Settings) -> int:
    # A worker publishes no flows: the API process (or `flows push`) does; it runs what is stored.
    services = await open_services(settings.model_copy(update={"flows_dir": None}))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        requeued = await services.scheduler.start()
        print(f"graph-runtime worker {services.scheduler.worker_id}: up to {settings.max_concurrent_jobs} "
              f"concurrent tasks{f', {requeued} interrupted task(s) requeued' if requeued else ''}", flush=True)
        await stop.wait()
        print("graph-runtime worker: draining", flush=True)
        await services.scheduler.drain(settings.shutdown_grace_s)
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(signum)
        await close_services(services)
    return 0
