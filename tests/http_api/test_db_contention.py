"""Durability, part 11: another process locking the SQLite file, and our own write load.

Another process holding the database's write lock for a few seconds must cost only latency (no
5xx, no failed node, no lost or doubled transition). Held longer than the busy timeout, API
writers answer 503 with ``Retry-After`` (never 500), reads keep answering where WAL lets them,
running nodes are not failed for it, and everything completes once the lock is released. Under
our own load, no "database is locked" ever reaches a caller.

The lock is taken by a real other process: ``python -c`` with the standard library's ``sqlite3``
running ``BEGIN EXCLUSIVE`` on the server's file. In WAL mode that takes the write lock (it is the
same as ``BEGIN IMMEDIATE`` there): other writers wait, readers carry on. The test checks that
on the file itself before it relies on it.

The server's busy timeout is the production one (``PRAGMA busy_timeout=5000`` in
``storage/engine.py``; neither the database URL nor the settings can change it), so the long
lock is held for as long as it takes the server to answer the writers, rather than a guessed
fixed time.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from http_api.settings import Settings
from tests.conftest import SAMPLE_FLOWS, Api
from tests.support import Echo, FlowBuilder, eventually

pytestmark = pytest.mark.timeout(90)

BUSY_TIMEOUT_S = 5.0  # storage/engine.py: PRAGMA busy_timeout=5000
SHORT_HOLD_S = 2.0  # well inside the busy timeout
LONG_HOLD_CAP_S = 40.0  # the long lock is released by the test; this only bounds a stuck child
LOCKED = "database is locked"

# The other process: takes the write lock, says so, holds it until `seconds` pass or its stdin
# closes, then commits and says so.
LOCK_HOLDER = r"""
import sqlite3, sys, threading
path, seconds = sys.argv[1], float(sys.argv[2])
conn = sqlite3.connect(path, timeout=30, isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
stdin_closed = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stdin_closed.set()), daemon=True).start()
stdin_closed.wait(seconds)
conn.execute("COMMIT")
conn.close()
print("released", flush=True)
"""


# -- helpers ---------------------------------------------------------------------------------


@dataclass
class Call:
    """One API call as the client saw it."""

    method: str
    path: str
    status: int
    body: str
    retry_after: str | None
    started: float
    elapsed: float

    def json(self) -> Any:
        import json

        return json.loads(self.body)


@dataclass
class Recorder:
    """Makes API calls and keeps every answer, so a test can assert on all of them at once."""

    api: Api
    calls: list[Call] = field(default_factory=list)

    async def call(self, method: str, path: str, **kwargs: Any) -> Call:
        started = time.monotonic()
        response = await self.api.request(method, path, **kwargs)
        body = await response.text()
        call = Call(method, path, response.status, body, response.headers.get("Retry-After"), started,
                    time.monotonic() - started)
        self.calls.append(call)
        return call

    async def execute(self, flow_id: str, body: dict[str, Any] | None = None) -> Call:
        return await self.call("POST", f"/api/v1/flow/{flow_id}/execute", json=body or {})

    async def get_task(self, task_id: int) -> Call:
        return await self.call("GET", f"/api/v1/task/{task_id}")

    def server_errors(self) -> list[tuple[str, str, int, str]]:
        return [(c.method, c.path, c.status, c.body[:300]) for c in self.calls if c.status >= 500 and c.status != 503]

    def mentioning_locked(self) -> list[tuple[str, str, int, str]]:
        return [(c.method, c.path, c.status, c.body[:300]) for c in self.calls if LOCKED in c.body.lower()]


@dataclass
class HeldLock:
    proc: asyncio.subprocess.Process
    taken_at: float
    released_at: float | None = None

    async def release(self, timeout: float = 15.0) -> None:
        """Close the holder's stdin: it commits, says "released" and exits."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        out, err = await asyncio.wait_for(self.proc.communicate(), timeout)
        if self.released_at is None:
            self.released_at = time.monotonic()
            assert out.strip() == b"released", (out, err)
        assert self.proc.returncode == 0, (out, err)

    async def wait_released(self, timeout: float) -> None:
        """The holder lets go by itself (its hold time has passed)."""
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        assert line.strip() == b"released", line
        self.released_at = time.monotonic()
        await self.release()


@asynccontextmanager
async def exclusive_lock(db_path: Path, hold_s: float) -> AsyncIterator[HeldLock]:
    """Another process holds the write lock on ``db_path`` (at most ``hold_s``) inside the block."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", LOCK_HOLDER, str(db_path), str(hold_s),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    held = None
    try:
        assert proc.stdout is not None and proc.stderr is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 20.0)
        if line.strip() != b"locked":
            raise AssertionError(f"the lock holder did not lock: {line!r} {await proc.stderr.read()!r}")
        held = HeldLock(proc, time.monotonic())
        yield held
    finally:
        if proc.returncode is None:
            assert proc.stdin is not None
            proc.stdin.close()
            try:
                await asyncio.wait_for(proc.communicate(), 15.0)
            except TimeoutError:
                proc.kill()
                await proc.communicate()


def assert_writes_blocked_reads_not(db_path: Path) -> None:
    """What the other process's BEGIN EXCLUSIVE blocks in WAL mode: writers yes, readers no."""
    probe = sqlite3.connect(db_path, timeout=0, isolation_level=None)
    try:
        assert probe.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        with pytest.raises(sqlite3.OperationalError, match=LOCKED):
            probe.execute("BEGIN IMMEDIATE")
        probe.execute("SELECT count(*) FROM task").fetchone()  # a reader is not blocked
    finally:
        probe.close()


def db_file(settings: Settings) -> Path:
    return Path(settings.database_url.removeprefix("sqlite+aiosqlite:///"))


def nap_flow(flow_id: str = "nap") -> dict[str, Any]:
    """start → two sleepers side by side → end: six node writes and a finish per task."""
    return (FlowBuilder(flow_id).node("s", "start").node("a", "test.sleep", seconds=0.5)
            .node("b", "test.sleep", seconds=0.5).node("e", "end")
            .edge("s", "a", input="x").edge("s", "b", input="x").edge("a", "e").edge("b", "e").build())


def naps(seconds: float) -> dict[str, Any]:
    return {"node_settings": {"a": {"seconds": seconds}, "b": {"seconds": seconds}}}


async def wait_all(api: Api, task_ids: list[int], *names: str, timeout: float) -> dict[int, Any]:
    async def ended() -> dict[int, Any] | None:
        tasks = {i: await api.task(i) for i in task_ids}
        return tasks if all(t["status_name"] in names for t in tasks.values()) else None

    try:
        return await eventually(ended, timeout=timeout, interval=0.05)
    except AssertionError:
        states = {i: ((t := await api.task(i))["status_name"], t["error"],
                      {n: (r["status"], r["attempts"]) for n, r in t["nodes"].items()}) for i in task_ids}
        raise AssertionError(f"tasks did not all end {names} within {timeout}s: {states}") from None


def assert_clean_success(tasks: dict[int, Any], node_ids: set[str]) -> None:
    """Every task succeeded, every node ran exactly once and succeeded."""
    problems = {}
    for task_id, task in tasks.items():
        nodes = {n: (r["status"], r["attempts"], r["error"]) for n, r in task["nodes"].items()}
        if (task["status_name"] != "succeeded" or task["error"] is not None or set(nodes) != node_ids
                or any(v != ("succeeded", 1, None) for v in nodes.values())):
            problems[task_id] = (task["status_name"], task["error"], nodes)
    assert not problems, f"tasks not cleanly succeeded (status, error, nodes: status/attempts/error): {problems}"


async def poll_until(done: Callable[[], bool], poll: Callable[[], Awaitable[Any]], interval: float = 0.05) -> int:
    """Keep polling while ``done()`` is false; how many polls were made."""
    count = 0
    while not done():
        await poll()
        count += 1
        await asyncio.sleep(interval)
    return count


def log_lines(caplog: pytest.LogCaptureFixture, pattern: str) -> list[str]:
    regex = re.compile(pattern, re.IGNORECASE)
    return [f"{r.levelname} {r.name}: {r.getMessage()}" for r in caplog.get_records("call") if regex.search(r.getMessage())]


def task_runs(db_path: Path, task_ids: list[int]) -> dict[int, int]:
    """How many times each task was claimed (read from the file: the API does not show it)."""
    conn = sqlite3.connect(db_path)
    try:
        marks = ",".join("?" * len(task_ids))
        return dict(conn.execute(f"SELECT id, claims FROM task WHERE id IN ({marks})", task_ids).fetchall())
    finally:
        conn.close()


def task_endings(caplog: pytest.LogCaptureFixture, task_ids: list[int]) -> dict[int, int]:
    """How many times the executor ended each task ("task ended" log records)."""
    counts = dict.fromkeys(task_ids, 0)
    for record in caplog.get_records("call"):
        task_id = getattr(record, "task_id", None)
        if getattr(record, "action", None) == "task_finished" and task_id in counts:
            counts[task_id] += 1
    return counts


@pytest.fixture
def settings(db_url: str, request: pytest.FixtureRequest) -> Settings:
    """The suite's settings; a test may override fields with ``indirect`` parametrisation."""
    overrides = getattr(request, "param", {})
    return Settings(database_url=db_url, flows_dir=SAMPLE_FLOWS, poll_interval_s=0.2, http_allow_private=True,
                    **overrides)


# -- 1. a lock shorter than the busy timeout: only latency -----------------------------------


async def test_a_short_lock_by_another_process_costs_only_latency(
    api: Api, settings: Settings, caplog: pytest.LogCaptureFixture,
) -> None:
    rec = Recorder(api)
    await api.put_flow(nap_flow())
    node_ids = {"s", "a", "b", "e"}

    # Unlocked baseline: how long an execute answer and a task take here.
    baseline_calls = [await rec.execute("nap", naps(0.5)) for _ in range(3)]
    baseline_ids = [c.json()["id"] for c in baseline_calls]
    baseline = await wait_all(api, baseline_ids, "succeeded", "failed", timeout=15)
    baseline_execute_s = max(c.elapsed for c in baseline_calls)
    baseline_task_s = max(t["execution_time"] for t in baseline.values())

    # Tasks running when the lock is taken; their sleepers end (and write) while it is held.
    before = [(await rec.execute("nap", naps(0.8))).json()["id"] for _ in range(4)]
    await wait_all(api, before, "running", timeout=10)

    async with exclusive_lock(db_file(settings), SHORT_HOLD_S) as lock:
        assert_writes_blocked_reads_not(db_file(settings))
        # While it is held: new executes (concurrently) and polling of every task.
        during_calls: list[Call] = []

        async def submit() -> None:
            during_calls.append(await rec.execute("nap", naps(0.3)))

        async def poll_all() -> None:
            await asyncio.gather(*(rec.get_task(i) for i in before))

        submitting = asyncio.gather(*(submit() for _ in range(4)))
        releasing = asyncio.ensure_future(lock.wait_released(timeout=SHORT_HOLD_S + 10))
        polls = await poll_until(lambda: submitting.done() and releasing.done(), poll_all)
        await submitting
        await releasing
        held_s = lock.released_at - lock.taken_at  # type: ignore[operator]

    during = [c.json()["id"] for c in during_calls if c.status == 201]
    tasks = await wait_all(api, before + during, "succeeded", "failed", "cancelled", timeout=20)

    assert not rec.server_errors(), rec.server_errors()
    not_2xx = [(c.method, c.path, c.status, c.body[:200]) for c in rec.calls if not 200 <= c.status < 300]
    assert not not_2xx, f"a lock shorter than the busy timeout must only cost latency: {not_2xx}"
    assert len(during) == 4
    assert_clean_success(tasks, node_ids)
    assert all(t["result"] == {"a": {"slept": 0.8}, "b": {"slept": 0.8}} for t in (tasks[i] for i in before))
    await eventually(lambda: api.services.scheduler.running_count == 0, timeout=10)
    assert task_runs(db_file(settings), before + during) == dict.fromkeys(before + during, 1)
    assert task_endings(caplog, before + during) == dict.fromkeys(before + during, 1)

    execute_during_s = max(c.elapsed for c in during_calls)
    slowest_before = max(tasks[i]["execution_time"] for i in before)
    print(f"\nshort lock held {held_s:.2f}s; polls during it: {polls}; "
          f"execute answer: baseline {baseline_execute_s * 1000:.0f} ms, during the lock up to "
          f"{execute_during_s:.2f}s; task time: baseline {baseline_task_s:.2f}s, running across the lock "
          f"up to {slowest_before:.2f}s; store retries logged: {len(log_lines(caplog, 'store unavailable'))}")
    # It cost latency (the executes waited for the lock), and no more than the lock's hold.
    assert execute_during_s < held_s + 2.0



# -- 2. a lock longer than the busy timeout: 503 for writers, nothing lost -------------------


# A lease longer than the lock: a lock that outlives the lease is its own (failing) test below.
@pytest.mark.parametrize("settings", [{"max_concurrent_jobs": 2, "lease_s": 30}], indirect=True)
async def test_a_long_lock_answers_writers_503_and_loses_nothing(
    api: Api, settings: Settings, caplog: pytest.LogCaptureFixture,
) -> None:
    rec = Recorder(api)
    await api.put_flow(nap_flow())
    node_ids = {"s", "a", "b", "e"}

    # Two tasks running (the only two slots) and two queued when the lock is taken. The running
    # ones' sleepers end while it is held, so their node writes wait for it too.
    before = [(await rec.execute("nap", naps(1.0))).json()["id"] for _ in range(4)]
    await wait_all(api, before[:2], "running", timeout=10)
    assert [t["status_name"] for t in [await api.task(i) for i in before[2:]]] == ["queued", "queued"]

    # Held until the server has answered the writer: as long as that takes, not a guessed time.
    async with exclusive_lock(db_file(settings), LONG_HOLD_CAP_S) as lock:
        assert_writes_blocked_reads_not(db_file(settings))
        write = asyncio.ensure_future(rec.execute("nap", naps(0.1)))

        async def read_everything() -> None:
            await asyncio.gather(*(rec.get_task(i) for i in before), rec.call("GET", "/api/v1/tasks?limit=10"),
                                 rec.call("GET", "/healthz"))

        polls = await poll_until(write.done, read_everything, interval=0.1)
        refused = await asyncio.wait_for(write, 8 * BUSY_TIMEOUT_S)
        mid_lock = {i: await api.task(i) for i in before}
        await lock.release()
        held_s = lock.released_at - lock.taken_at  # type: ignore[operator]

    # The writer: 503 with Retry-After and the JSON error, after the busy timeout; never a 500.
    assert refused.status == 503, (refused.status, refused.body)
    assert refused.retry_after is not None and refused.retry_after.isdigit(), refused.retry_after
    assert refused.json()["error"]["code"] == "store_unavailable", refused.body
    assert refused.elapsed >= BUSY_TIMEOUT_S - 0.5, "answered 503 before the busy timeout ran out"
    # The readers kept answering, promptly, while it was held (WAL: the lock blocks writers only).
    assert lock.released_at is not None
    reads = [c for c in rec.calls if c.method == "GET" and lock.taken_at <= c.started < lock.released_at]
    assert len(reads) >= 10 and all(c.status == 200 for c in reads), [
        (c.path, c.status, c.body[:200]) for c in reads if c.status != 200]
    slowest_read = max(c.elapsed for c in reads)
    assert slowest_read < BUSY_TIMEOUT_S / 2, slowest_read
    assert not rec.server_errors(), rec.server_errors()
    # Nothing was failed (or lost) while it was held.
    assert all(t["status_name"] in ("running", "queued", "succeeded") for t in mid_lock.values()), mid_lock

    # Released: everything queued or running before the lock completes, each node run once.
    tasks = await wait_all(api, before, "succeeded", "failed", "cancelled", timeout=30)
    assert_clean_success(tasks, node_ids)
    await eventually(lambda: api.services.scheduler.running_count == 0, timeout=10)
    assert task_runs(db_file(settings), before) == dict.fromkeys(before, 1)
    assert task_endings(caplog, before) == dict.fromkeys(before, 1)
    # The refused execute created nothing; sent again now, it is accepted and runs.
    listed = await api.json("GET", "/api/v1/tasks?flow_id=nap&limit=100", 200)
    assert sorted(t["id"] for t in listed["tasks"]) == sorted(before)
    retried = await rec.execute("nap", naps(0.1))
    assert retried.status == 201, retried.body
    assert_clean_success(await wait_all(api, [retried.json()["id"]], "succeeded", "failed", timeout=15), node_ids)

    print(f"\nlong lock held {held_s:.2f}s; execute answered {refused.status} Retry-After={refused.retry_after} "
          f"after {refused.elapsed:.2f}s: {refused.body}; {len(reads)} reads during it ({polls} rounds), all 200, "
          f"slowest {slowest_read * 1000:.0f} ms; warnings: "
          f"{log_lines(caplog, 'unavailable|cannot|lease|requeue')[:6]}")


# -- 3. our own load: never "database is locked" ----------------------------------------------


async def test_our_own_load_never_answers_database_is_locked(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    rec = Recorder(api)
    flow = (FlowBuilder("quick").node("s", "start").node("x", "test.echo").node("e", "end")
            .edge("s", "x", input="v").edge("x", "e").build())
    await api.put_flow(flow)
    clients, per_client = 20, 10
    created: list[int] = []
    started = time.monotonic()

    async def client(n: int) -> None:
        for i in range(per_client):
            call = await rec.execute("quick", {"node_settings": {"s": {"data": {"client": n, "i": i}}}})
            if call.status == 201:
                task_id = call.json()["id"]
                created.append(task_id)
                await rec.get_task(task_id)

    async def poller(stop: asyncio.Event) -> None:
        while not stop.is_set():
            await rec.call("GET", "/api/v1/tasks?flow_id=quick&limit=20")
            for task_id in created[-3:]:
                await rec.get_task(task_id)
            await asyncio.sleep(0.02)

    async def all_ended() -> bool:
        listed = (await rec.call("GET", "/api/v1/tasks?flow_id=quick&limit=200")).json()["tasks"]
        return len(listed) == clients * per_client and all(t["status"] in (3, 4, 5) for t in listed)

    stop = asyncio.Event()
    pollers = [asyncio.create_task(poller(stop)) for _ in range(2)]
    try:
        await asyncio.wait_for(asyncio.gather(*(client(n) for n in range(clients))), 60)
        submitted_s = time.monotonic() - started
        await eventually(all_ended, timeout=45, interval=0.1)
    finally:
        stop.set()
        await asyncio.gather(*pollers)
    total_s = time.monotonic() - started

    statuses: dict[int, int] = {}
    for call in rec.calls:
        statuses[call.status] = statuses.get(call.status, 0) + 1
    assert not [c for c in rec.calls if c.status >= 500], [(c.method, c.path, c.status, c.body[:200])
                                                            for c in rec.calls if c.status >= 500][:10]
    assert not rec.mentioning_locked(), rec.mentioning_locked()[:10]
    assert len(created) == clients * per_client and statuses.get(201) == clients * per_client
    listed = (await rec.call("GET", "/api/v1/tasks?flow_id=quick&limit=200&include=nodes")).json()["tasks"]
    assert_clean_success({t["id"]: t for t in listed}, {"s", "x", "e"})
    # Nor does it reach the executor or the scheduler (they would retry it, costing latency).
    assert not log_lines(caplog, LOCKED), log_lines(caplog, LOCKED)[:10]
    executes = sorted(c.elapsed for c in rec.calls if c.method == "POST")
    print(f"\nown load: {len(rec.calls)} calls {statuses}; {clients * per_client} executes from {clients} clients "
          f"in {submitted_s:.2f}s, all succeeded after {total_s:.2f}s; execute latency "
          f"p50 {executes[len(executes) // 2] * 1000:.0f} ms, max {executes[-1] * 1000:.0f} ms")


# -- 4. what review found and fixed: reads, writer queues and leases under a long lock ----------


async def test_a_read_by_a_key_not_used_for_a_minute_is_not_blocked_by_the_lock(
    api: Api, settings: Settings,
) -> None:
    rec = Recorder(api)
    await api.put_flow(nap_flow())
    task_id = (await rec.execute("nap", naps(0.0))).json()["id"]
    await wait_all(api, [task_id], "succeeded", timeout=10)
    poller_key = await api.new_key("execute")  # as good as a key whose last use was a minute ago

    async with exclusive_lock(db_file(settings), LONG_HOLD_CAP_S) as lock:
        read = asyncio.ensure_future(rec.call("GET", f"/api/v1/task/{task_id}", token=poller_key))
        done, _ = await asyncio.wait([read], timeout=1.5)  # other reads answer in milliseconds
        await lock.release()
    call = await read
    print(f"\nread by a fresh key during the lock: {call.status} after {call.elapsed:.2f}s "
          f"(answered while the lock was held: {bool(done)}); body {call.body[:160]}")
    assert done, "the read waited for the write lock"
    assert call.status == 200, (call.status, call.body)


async def test_every_writer_during_a_long_lock_is_answered_503_within_the_busy_timeout(
    api: Api, settings: Settings,
) -> None:
    rec = Recorder(api)
    await api.put_flow(nap_flow())
    deadline_s = BUSY_TIMEOUT_S + 2.5

    async with exclusive_lock(db_file(settings), LONG_HOLD_CAP_S) as lock:
        writes = [asyncio.ensure_future(rec.execute("nap", naps(0.0))) for _ in range(2)]
        done, _ = await asyncio.wait(writes, timeout=deadline_s)
        await lock.release()
    calls = [await w for w in writes]
    answers = [(c.status, round(c.elapsed, 2), w in done) for c, w in zip(calls, writes, strict=True)]
    print(f"\ntwo executes during a lock held {lock.released_at - lock.taken_at:.2f}s "  # type: ignore[operator]
          f"(status, seconds, answered while held): {answers}")
    assert not [c for c in calls if c.status >= 500 and c.status != 503]
    assert all(w in done for w in writes), f"not answered within {deadline_s}s while the lock was held: {answers}"
    assert all(c.status == 503 and c.retry_after for c in calls), answers


@pytest.mark.parametrize("settings", [{"lease_s": 2}], indirect=True)
async def test_a_lock_longer_than_the_lease_does_not_run_a_task_twice(
    api: Api, settings: Settings, caplog: pytest.LogCaptureFixture,
) -> None:
    rec = Recorder(api)
    flow = (FlowBuilder("chain").node("s", "start").node("a", "test.sleep", seconds=1.0).node("x", "test.echo")
            .node("e", "end").edge("s", "a", input="v").edge("a", "x", input="v").edge("x", "e").build())
    await api.put_flow(flow)
    task_id = (await rec.execute("chain")).json()["id"]
    await wait_all(api, [task_id], "running", timeout=10)

    async with exclusive_lock(db_file(settings), BUSY_TIMEOUT_S + 1.0) as lock:  # 3 leases, > the busy timeout
        await lock.wait_released(timeout=BUSY_TIMEOUT_S + 10)
    task = (await wait_all(api, [task_id], "succeeded", "failed", "cancelled", timeout=30))[task_id]
    await eventually(lambda: api.services.scheduler.running_count == 0, timeout=10)

    runs, endings = task_runs(db_file(settings), [task_id]), task_endings(caplog, [task_id])
    requeued = log_lines(caplog, "requeue|lease lost")
    print(f"\nlock of {lock.released_at - lock.taken_at:.2f}s with lease_s=2: task {task['status_name']}, "  # type: ignore[operator]
          f"nodes {[(n, r['attempts']) for n, r in task['nodes'].items()]}, claims {runs[task_id]}, "
          f"'task ended' logged {endings[task_id]}x, echo ran {len(Echo.runs)}x; {requeued}")
    assert_clean_success({task_id: task}, {"s", "a", "x", "e"})
    assert not requeued
    assert runs == {task_id: 1} and endings == {task_id: 1}
