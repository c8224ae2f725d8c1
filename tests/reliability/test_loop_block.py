"""Node code never freezes the API, and a node that blocks its worker's loop runs once (SPEC §10).

Real processes on a database of the machine's PostgreSQL: ``graph-runtime serve --workers 0`` and
``graph-runtime worker --lease-s 2`` processes with the reliability plugin (``plugin.py``).
"""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.error
from pathlib import Path

import pytest

from tests.processes import http_raw
from tests.recording import read_events
from tests.reliability.cluster import deployed, execute, put_flow, wait_ended

pytestmark = pytest.mark.postgres

BLOCK_S = 15.0
BLOCKING_FLOW = {"id": "blocks", "nodes": [{"id": "generate", "type": "test.block_loop",
                                            "settings": {"seconds": BLOCK_S}}],
                 "defaults": {"start_node_id": "generate", "end_node_id": "generate"}}
SYNC_FLOW = {"id": "sleeps", "nodes": [{"id": "slow", "type": "test.sync_sleep", "settings": {"seconds": 3.0}}],
             "defaults": {"start_node_id": "slow", "end_node_id": "slow"}}
QUICK_FLOW = {"id": "quick", "nodes": [{"id": "quick", "type": "test.record", "settings": {"sleep_s": 0.01}}],
              "defaults": {"start_node_id": "quick", "end_node_id": "quick"}}


class HealthProbe:
    """GET /healthz every ~100 ms with a 0.5 s client timeout, from a thread; keeps every answer."""

    def __init__(self, url: str) -> None:
        self.url = f"{url}/healthz"
        self.answers: list[tuple[int | str, float]] = []  # (status or error, seconds)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._probe, name="healthz-probe", daemon=True)

    def __enter__(self) -> HealthProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _probe(self) -> None:
        while not self._stop.is_set():
            began = time.monotonic()
            try:
                status: int | str = http_raw("GET", self.url, timeout=0.5)[0]
            except (urllib.error.URLError, OSError) as exc:  # a timeout is an OSError too
                status = f"{type(exc).__name__}: {exc}"
            took = time.monotonic() - began
            self.answers.append((status, took))
            self._stop.wait(max(0.0, 0.1 - took))

    @property
    def max_latency_ms(self) -> float:
        return 1000 * max(took for _, took in self.answers)


@pytest.mark.timeout(180)
async def test_a_node_blocking_its_loop_for_15s_runs_once_and_the_api_answers_throughout(tmp_path: Path) -> None:
    began = time.monotonic()
    async with deployed(tmp_path, lease_s=2.0) as deployment:
        api = deployment.start_api()
        first, second = deployment.start_worker(), deployment.start_worker()  # a second could take it over
        async with deployment.session() as http:
            await put_flow(http, BLOCKING_FLOW)
            with HealthProbe(api.url) as probe:
                task_id = await execute(http, "blocks")
                ended = await wait_ended(http, [task_id], timeout=BLOCK_S + 45, describe=deployment.describe)
                await asyncio.sleep(3 * 2.0)  # three leases more: a lost lease would show as a second start by now
        events = read_events(deployment.record)

    starts = [e for e in events if e.kind == "start" and e.node_id == "generate"]
    print(f"\nloop block: {len(probe.answers)} /healthz answers, max latency {probe.max_latency_ms:.1f} ms; "
          f"{time.monotonic() - began:.1f}s in all")
    assert ended[task_id]["status_name"] == "succeeded", ended[task_id]["error"]
    assert len(starts) == 1, f"the blocking node started {len(starts)} times: {starts}"
    [ran_in] = [w for w in (first, second) if w.proc.pid == starts[0].pid]
    blocked = [line for line in ran_in.stderr.splitlines() if "action=loop_blocked" in line]
    assert blocked and "node_id=generate" in blocked[0] and f"task {task_id} node 'generate'" in blocked[0], \
        ran_in.stderr[-3000:]
    assert probe.answers and all(status == 200 for status, _ in probe.answers), \
        [a for a in probe.answers if a[0] != 200][:10]


@pytest.mark.timeout(150)
async def test_a_synchronous_node_sleeping_does_not_hold_up_another_task_on_the_same_worker(tmp_path: Path) -> None:
    began = time.monotonic()
    async with deployed(tmp_path, lease_s=2.0) as deployment:
        deployment.start_api()
        worker = deployment.start_worker()  # the only worker: both tasks run in it
        async with deployment.session() as http:
            await put_flow(http, SYNC_FLOW)
            await put_flow(http, QUICK_FLOW)
            slow = await execute(http, "sleeps")
            while not any(e.kind == "start" and e.node_id == "slow" for e in read_events(deployment.record)):
                await asyncio.sleep(0.05)
            quick = await execute(http, "quick")
            ended = await wait_ended(http, [slow, quick], timeout=60, describe=deployment.describe)
        events = {(e.kind, e.node_id): e for e in read_events(deployment.record)}

    print(f"\nsync node: the quick task ended {(events['end', 'slow'].ns - events['end', 'quick'].ns) / 1e9:.2f}s "
          f"before the sleeping one; {time.monotonic() - began:.1f}s in all")
    assert {ended[slow]["status_name"], ended[quick]["status_name"]} == {"succeeded"}
    assert {e.pid for e in events.values()} == {worker.proc.pid}
    assert events["start", "slow"].ns < events["start", "quick"].ns < events["end", "quick"].ns < events["end", "slow"].ns
