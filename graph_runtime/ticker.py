"""A clock for an event loop that costs the loop nothing while it is not needed: a thread that calls
back into the loop every so often, only while there is something to do.

Why not ``loop.call_later``: while any timer sits in asyncio's heap, every turn of the loop that
waits reads the clock and works out a timeout (``BaseEventLoop._run_once``). The events hub kept
one armed through every task for its pending events (:data:`graph_runtime.events.EVENTS_LATER_S`),
and where it was the loop's only timer (a chain run in-process) that was 0.5% of a 10-node chain's
instructions; arming and cancelling it once a task cost about as much again. Here the loop pays an
attribute read a task while the thread ticks, and one ``call_soon_threadsafe`` a tick while
something is pending.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable


class Ticker:
    """Calls ``tick()`` on ``loop`` every ``period_s`` while ``busy()`` answers True (read from the
    ticker's thread: an attribute read, nothing that changes anything). Once ``busy()`` answers
    False at a tick, the thread ends and :attr:`asleep` is True: the loop calls :meth:`wake` when
    there is something again.

    The hand-over between the two threads: the ticker sets ``asleep`` before its last look at
    ``busy()``, and the loop makes ``busy()`` true before it reads ``asleep``; so either the
    ticker sees the new work and goes on, or the loop sees it asleep and wakes it."""

    def __init__(self, loop: asyncio.AbstractEventLoop, tick: Callable[[], None], busy: Callable[[], bool],
                 period_s: float) -> None:
        self._loop = loop
        self._tick = tick
        self._busy = busy
        self._period_s = period_s
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._due = False  # a tick handed to the loop has not run yet: no second one meanwhile
        self.asleep = True

    def wake(self) -> None:
        """Start ticking (on the loop's thread), unless it ticks already or was stopped."""
        with self._lock:
            self.asleep = False
            if self._thread is None and not self._stopped.is_set():
                self._thread = threading.Thread(target=self._run, name="events-ticker", daemon=True)
                self._thread.start()

    def stop(self) -> None:
        """Stop for good: no tick runs after this returns (one already handed to the loop is dropped)."""
        self._stopped.set()
        with self._lock:
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=1.0)

    def _run(self) -> None:
        while not self._stopped.wait(self._period_s):
            if not self._busy():
                with self._lock:
                    self.asleep = True
                    if not self._busy():
                        self._thread = None
                        return
                    self.asleep = False
            if not self._due:
                self._due = True
                try:
                    self._loop.call_soon_threadsafe(self._ticked)
                except RuntimeError:  # the loop is closed: nothing left to tick for
                    with self._lock:
                        self._thread = None
                    return

    def _ticked(self) -> None:
        self._due = False
        if not self._stopped.is_set():
            self._tick()  # what it raises, the loop's exception handler logs
