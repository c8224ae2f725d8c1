"""The loop watch: notices a node that blocks the event loop and names it (SPEC §10).

A node's synchronous ``run`` is called on a thread, but async code can still block the loop (a
synchronous model call inside ``async def run``). Heartbeats go on regardless (their own thread,
``graph_runtime.heartbeat``); what is left is to tell the operator. A thread asks the loop for a
callback every ``interval_s``; when the loop has not run it for ``threshold_s``, one WARNING
(``action: loop_blocked``) names the nodes running at that moment, and one more line says how
long the stall lasted once the loop runs again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence

log = logging.getLogger(__name__)

RunningNodes = Callable[[], Sequence[tuple[int, str]]]
"""``(task id, node id)`` of every node running now; called from the watch's thread."""


class LoopWatch:
    def __init__(self, loop: asyncio.AbstractEventLoop, running: RunningNodes, *,
                 threshold_s: float = 1.0, interval_s: float = 0.25) -> None:
        self._loop = loop
        self._running = running
        self.threshold_s = threshold_s
        self.interval_s = interval_s
        self._answered = time.monotonic()
        self._stalled_since: float | None = None  # when the loop last answered before a reported stall
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._watch, name="loop-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _answer(self) -> None:
        # On the loop: the first callback it runs after a reported stall says how long it lasted.
        with self._lock:
            self._answered = time.monotonic()
            stalled_since, self._stalled_since = self._stalled_since, None
        if stalled_since is not None:
            lasted = round(self._answered - stalled_since, 3)
            log.warning("event loop ran again after %.2fs", lasted, extra={"action": "loop_unblocked", "seconds": lasted})

    def _watch(self) -> None:
        while not self._stop.wait(self.interval_s):
            with contextlib.suppress(RuntimeError):  # the loop closed: the process is stopping
                self._loop.call_soon_threadsafe(self._answer)
            with self._lock:
                silent = time.monotonic() - self._answered
                report = silent >= self.threshold_s and self._stalled_since is None
                if report:
                    self._stalled_since = self._answered
            if report:
                self._report(silent)

    def _report(self, silent: float) -> None:
        try:
            nodes = list(self._running())
        except RuntimeError:  # the loop changed the table while we read it: name none rather than guess
            nodes = []
        names = ", ".join(f"task {task_id} node {node_id!r}" for task_id, node_id in nodes) or "no node"
        log.warning("the event loop has been blocked for %.2fs; running: %s (make the node's run a plain def, "
                    "or use ctx.to_thread, so it runs on a thread)", silent, names,
                    extra={"action": "loop_blocked", "seconds": round(silent, 3),
                           "task_id": nodes[0][0] if nodes else None, "node_id": nodes[0][1] if nodes else None})
