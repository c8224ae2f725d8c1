"""The events hub's clock (graph_runtime.ticker): it ticks on the loop while there is work, its
thread ends once there is none, it comes back when asked, and nothing ticks after stop."""

from __future__ import annotations

import asyncio
import threading

from graph_runtime.ticker import Ticker


def _tickers() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "events-ticker"]


async def test_it_ticks_on_the_loop_while_busy_sleeps_when_not_and_wakes_again() -> None:
    loop = asyncio.get_running_loop()
    ticks: list[bool] = []
    work = [3]

    def tick() -> None:
        ticks.append(threading.current_thread() is threading.main_thread())
        work[0] -= 1

    ticker = Ticker(loop, tick, lambda: work[0] > 0, 0.01)
    try:
        assert ticker.asleep and not _tickers()
        ticker.wake()
        for _ in range(200):
            if ticker.asleep and not _tickers():
                break
            await asyncio.sleep(0.01)
        assert ticks == [True, True, True], "three ticks, each on the loop's thread"
        assert ticker.asleep and not _tickers(), "no work: its thread ended"
        work[0] = 1
        ticker.wake()
        for _ in range(200):
            if len(ticks) == 4 and ticker.asleep:
                break
            await asyncio.sleep(0.01)
        assert len(ticks) == 4 and ticker.asleep
    finally:
        ticker.stop()


async def test_nothing_ticks_after_stop_and_it_does_not_start_again() -> None:
    ticks: list[int] = []
    ticker = Ticker(asyncio.get_running_loop(), lambda: ticks.append(1), lambda: True, 0.01)
    ticker.wake()
    for _ in range(200):
        if ticks:
            break
        await asyncio.sleep(0.01)
    ticker.stop()
    await asyncio.sleep(0)  # a tick handed over just before the stop
    seen = len(ticks)
    await asyncio.sleep(0.05)
    assert len(ticks) == seen and not _tickers()
    ticker.wake()
    await asyncio.sleep(0.05)
    assert len(ticks) == seen and not _tickers()
