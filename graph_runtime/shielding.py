"""Work that must outlive a cancelled caller: a commit in flight, a thread that cannot be stopped."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


async def outlast_cancel(
    work: Awaitable[T], *, limit_s: float | None = None, on_orphaned: Callable[[asyncio.Future[Any]], None] | None = None,
) -> T:
    """Await ``work``; if the caller is cancelled meanwhile, keep waiting for it (at most
    ``limit_s`` more, if given) before re-raising the cancel.

    ``on_orphaned`` is called with the finished job when the caller was cancelled (nobody else
    will look at its result); otherwise a failure is retrieved and dropped.
    """
    job = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(job)
    except asyncio.CancelledError:
        job.add_done_callback(on_orphaned or _retrieve)
        loop = asyncio.get_running_loop()
        deadline = None if limit_s is None else loop.time() + limit_s
        while not job.done() and (deadline is None or loop.time() < deadline):
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait([job], timeout=None if deadline is None else deadline - loop.time())
        raise


def _retrieve(job: asyncio.Future[Any]) -> None:
    if not job.cancelled():
        job.exception()
