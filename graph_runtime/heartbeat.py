"""The lease heartbeat: a worker's leases renewed from a thread with its own event loop.

Why a thread: a node that blocks the event loop (a synchronous ``model.generate()``, a long
regex) used to stop the renewals with it; the lease expired, another worker resumed the task and
the node ran twice. Here the renewals go on whatever the loop does, over a database connection
of the thread's own (``open_renewer``). What a thread cannot survive — the whole process frozen
(SIGSTOP, a VM pause) — the store's fencing covers: the frozen worker's later writes are refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable, Collection
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from graph_runtime import errors

log = logging.getLogger(__name__)


class LeaseRenewer(Protocol):
    async def renew_leases(self, worker: str, task_ids: Collection[int], lease_s: float) -> set[int]:
        """Extend ``worker``'s leases; return the ids it still holds."""


OpenRenewer = Callable[[], AbstractAsyncContextManager[LeaseRenewer]]
"""Opens a renewer bound to the calling thread's event loop (its own database connection)."""


def through_loop(store: LeaseRenewer, loop: asyncio.AbstractEventLoop) -> OpenRenewer:
    """A renewer that hands each renewal to ``store`` on ``loop``: for stores that cannot open a
    second connection (an in-memory SQLite database). Such renewals wait for a blocked loop."""

    class _Bridge:
        async def renew_leases(self, worker: str, task_ids: Collection[int], lease_s: float) -> set[int]:
            future = asyncio.run_coroutine_threadsafe(store.renew_leases(worker, task_ids, lease_s), loop)
            return await asyncio.wrap_future(future)

    @contextlib.asynccontextmanager
    async def opened() -> AsyncIterator[LeaseRenewer]:
        yield _Bridge()

    return opened


class Heartbeat:
    """Renews the leases of the tasks a worker holds every ``lease_s / 3`` seconds, off the loop.

    Args:
        open_renewer: opens the renewer inside the heartbeat's thread.
        worker: the worker id the leases are held by.
        lease_s: the lease length.
        on_lost: called on the worker's loop with the ids whose lease another worker took.
    """

    def __init__(self, open_renewer: OpenRenewer, worker: str, lease_s: float,
                 on_lost: Callable[[set[int]], None]) -> None:
        self._open_renewer = open_renewer
        self._worker = worker
        self._lease_s = lease_s
        self._on_lost = on_lost
        self._held: set[int] = set()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        """Start renewing (call on the worker's event loop)."""
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{self._worker}", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        """Stop renewing and wait for the thread (its renewal in flight, if any)."""
        self._stopping.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
            self._thread = None

    def hold(self, task_id: int) -> None:
        """Renew ``task_id``'s lease from now on."""
        with self._lock:
            self._held.add(task_id)

    def drop(self, task_id: int) -> None:
        """Stop renewing ``task_id`` (it ended, or was released)."""
        with self._lock:
            self._held.discard(task_id)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._main())
        except Exception:
            log.exception("lease heartbeat stopped", extra={"action": "heartbeat_failed"})
        finally:
            loop.close()

    async def _main(self) -> None:
        async with self._open_renewer() as renewer:
            # Blocking this thread's own loop is fine: nothing else runs on it.
            while not self._stopping.wait(self._lease_s / 3):
                await self._beat(renewer)

    async def _beat(self, renewer: LeaseRenewer) -> None:
        with self._lock:
            held = set(self._held)
        if not held:
            return
        try:
            async with asyncio.timeout(self._lease_s / 3):
                kept = await renewer.renew_leases(self._worker, held, self._lease_s)
        except (errors.StoreUnavailable, TimeoutError) as exc:
            log.warning("cannot renew leases: %s", exc, extra={"action": "lease_renew_failed"})
            return
        with self._lock:
            lost = (held - kept) & self._held  # a task that ended meanwhile is not lost
        if lost and self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._on_lost, lost)
