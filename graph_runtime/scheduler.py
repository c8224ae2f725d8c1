"""The worker pool: claims queued tasks FIFO, runs at most ``max_concurrent`` at once, and keeps
their leases alive.

Leases: each claimed task is leased to this worker for ``lease_s`` seconds and renewed every
``lease_s / 3`` by a heartbeat thread (``graph_runtime.heartbeat``), so a node blocking the
event loop cannot lose it. A worker that dies stops renewing; any worker's recovery sweep then
puts the task back in the queue, and whoever claims it resumes it (succeeded nodes are not run
again). A worker that only froze finds its writes refused (fencing) and stops the task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from dataclasses import dataclass, field

from graph_runtime import errors
from graph_runtime.children import WAIT_POLL_S
from graph_runtime.executor import Control, Executor
from graph_runtime.heartbeat import Heartbeat, OpenRenewer, through_loop
from graph_runtime.loop_watch import LoopWatch
from graph_runtime.models import Claim, Task
from graph_runtime.ports import TaskStore, WorkWakeups

log = logging.getLogger(__name__)


IDLE_POLL_WITH_WAKEUPS_S = 2.0
"""An idle worker's fallback poll when queued work wakes it anyway (LISTEN/NOTIFY)."""


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


@dataclass
class Scheduler:
    """Claims tasks from the store whenever a slot is free.

    ``notify()`` wakes it at once when this process queues a task; ``poll_interval_s`` picks up
    tasks queued elsewhere and cancel requests made elsewhere.
    """

    store: TaskStore
    executor: Executor
    max_concurrent: int = 10
    poll_interval_s: float = 1.0
    lease_s: float = 10.0
    worker_id: str = field(default_factory=new_worker_id)
    open_renewer: OpenRenewer | None = None  # the heartbeat's own connection; None: through this loop's store
    wakeups: WorkWakeups | None = None  # work queued by other processes wakes this one at once (PostgreSQL)
    pools: frozenset[str] = frozenset()  # besides tasks queued, it claims tasks waiting for these pools
    claims_queued: bool = True  # False: it runs only the tasks given to run_child (`graph-runtime run`)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _running: dict[int, Control] = field(default_factory=dict)
    _loop_task: asyncio.Task[None] | None = None
    _heartbeat: Heartbeat | None = None
    _loop_watch: LoopWatch | None = None
    loop_blocked_s: float = 1.0  # a loop silent this long is logged (action loop_blocked) naming the nodes running
    _claiming: bool = True
    _reserved: int = 0  # slots kept for tasks this process is creating to run at once (reserve_slot)
    # Tasks may be waiting in the queue: the last claim took every free slot, or work was queued
    # since (notify, a requeue). They go first (reserve_slot), and a slot coming free looks for them.
    _backlog: bool = True
    _claim_in_flight: bool = False
    _notices: int = 0  # notify() calls so far: a claim under way when one came may have missed its task
    _promised: int = 0  # tasks being queued here without waking other workers (promise_claim)
    _releasing: set[asyncio.Future[None]] = field(default_factory=set)

    async def start(self) -> int:
        """Recover tasks of dead workers, then start claiming. Returns how many were requeued."""
        requeued = await self.store.requeue_expired(exclude_worker=self.worker_id)
        if requeued:
            log.info("resuming interrupted tasks", extra={"action": "tasks_requeued", "count": requeued})
        opener = self.open_renewer or through_loop(self.store, asyncio.get_running_loop())
        self._heartbeat = Heartbeat(opener, self.worker_id, self.lease_s, self._leases_lost)
        self._heartbeat.start()
        self._loop_watch = LoopWatch(asyncio.get_running_loop(), self.executor.running_nodes,
                                     threshold_s=self.loop_blocked_s)
        self._loop_watch.start()
        if self.wakeups is not None:
            await self.wakeups.start(self.notify)
        self._loop_task = asyncio.create_task(self._loop(), name="scheduler")
        return requeued

    async def drain(self, grace_s: float) -> None:
        """Stop claiming and starting nodes; give running nodes ``grace_s`` to finish.

        Tasks with nodes left are released back to the queue, to resume on the next start.
        """
        self._claiming = False
        self.executor.draining = True
        pending = [c.asyncio_task for c in self._running.values() if c.asyncio_task is not None]
        if pending:
            log.info("draining", extra={"action": "drain_started", "count": len(pending)})
            await asyncio.wait(pending, timeout=grace_s)

    async def stop(self) -> None:
        """Stop claiming, interrupt what still runs and release it; nothing is lost."""
        self._claiming = False
        if self.wakeups is not None:
            await self.wakeups.stop()
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
        running = dict(self._running)
        tasks = [c.asyncio_task for c in running.values() if c.asyncio_task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._release(list(running))
        if self._heartbeat is not None:  # last: the leases stay alive while tasks are released
            await self._heartbeat.stop()
        if self._loop_watch is not None:
            await asyncio.to_thread(self._loop_watch.stop)

    def notify(self) -> None:
        """A task was queued: look for work now."""
        self._notices += 1
        self._promised = 0  # from here the loop claims whatever is queued, promised or not
        self._backlog = True
        self._wake.set()

    @property
    def running_count(self) -> int:
        return len(self._running)

    @property
    def takes_new_work_now(self) -> bool:
        """Whether a task queued by this process now is the next one claimed here, at once (after
        :meth:`notify`): it runs queued tasks, has a slot free, and nothing else waits to be claimed
        (no backlog, no look at the queue pending)."""
        return (self._loop_task is not None and not self._loop_task.done() and self._claiming
                and self.claims_queued and self._free_slots() > 0 and not self._backlog
                and not self._claim_in_flight and not self._wake.is_set())

    def promise_claim(self) -> bool:
        """Whether a task this process is about to queue (then :meth:`notify`) will be claimed here
        at once, so workers elsewhere need not be woken for it. Each True holds a free slot until
        the next notify: of a burst of executes, no more go without a wake-up than slots are free."""
        if not self.takes_new_work_now or self._promised >= self._free_slots():
            return False
        self._promised += 1
        return True

    def reserve_slot(self) -> Claim | None:
        """Keep a free slot for a task this process is about to create and run at once (an execute
        with ``?wait``): created running under the claim returned (one statement; no claim after
        it, no wake-up for other workers), then given to :meth:`run_reserved`. None unless
        :attr:`takes_new_work_now` and no task is being queued here on a promise: tasks waiting in
        the queue go first."""
        if not self.takes_new_work_now or self._promised:
            return None
        self._reserved += 1
        return Claim(self.worker_id, self.lease_s)

    def run_reserved(self, task: Task | None) -> None:
        """Run ``task``, created in the slot :meth:`reserve_slot` kept; None: it was not (the slot is
        free). Stopped or draining meanwhile: the task goes back to the queue instead."""
        self._reserved -= 1
        if task is None:
            return
        if self._claiming:
            self._spawn(task)
        else:
            self._release_soon(task.id)

    def _release_soon(self, task_id: int) -> None:
        """Give a task created in this process's claim back to the queue (it stopped claiming)."""
        releasing = asyncio.ensure_future(self._release([task_id]))
        self._releasing.add(releasing)
        releasing.add_done_callback(self._releasing.discard)

    def cancel(self, task_id: int) -> bool:
        """Cancel ``task_id`` if it runs in this process; the executor records it ``cancelled``."""
        control = self._running.get(task_id)
        if control is None or control.asyncio_task is None:
            return False
        if control.user_cancelled:  # a second cancel must not interrupt the first one's bookkeeping
            return True
        control.user_cancelled = True
        control.asyncio_task.cancel()
        return True

    def claim_here(self) -> Claim | None:
        """A claim to create a task under that the caller then gives to :meth:`adopt`, then waits
        for with :meth:`run_child` (a subflow's child, ``graph-runtime run``'s task): created running here in
        one statement, not queued and then claimed, so no worker elsewhere is woken for it or takes
        it first. None while this scheduler does not claim (not started, draining): queue it instead
        (a task run by a scheduler not started would have no heartbeat renewing its lease)."""
        started = self._loop_task is not None and not self._loop_task.done()
        return Claim(self.worker_id, self.lease_s) if started and self._claiming else None

    def adopt(self, task: Task) -> None:
        """Run ``task``, created running under :meth:`claim_here`'s claim, beside the slots. Not a
        coroutine, so a done-callback of the insert can call it: a caller cancelled between the
        insert and running the task must not leave it running with nobody running it. Stopped
        claiming since: it goes back to the queue."""
        if task.id in self._running:
            return
        if self._claiming:
            self._spawn(task)
        else:
            self._release_soon(task.id)

    async def run_child(self, task_id: int) -> Task:
        """Run a child task (a subflow's, a map item's) to its end: claimed and run here beside
        the slots (or given to :meth:`adopt`), so parents waiting in every slot cannot starve their
        children; one taken by another worker (or requeued after a crash) is waited for. Returns
        it ended."""
        delay = WAIT_POLL_S[0]
        while True:
            if task_id not in self._running and self._claiming:
                claimed = await self.store.claim_task(task_id, self.worker_id, self.lease_s)
                if claimed is not None:
                    self._spawn(claimed)
            control = self._running.get(task_id)
            if control is not None and control.asyncio_task is not None:
                await asyncio.wait([control.asyncio_task])  # never cancels it if we are cancelled
                if control.ended is not None:
                    return control.ended
            current = await self.store.get_task(task_id)
            if current.status.ended:
                return current
            await asyncio.sleep(delay)
            delay = min(delay * 2, WAIT_POLL_S[1])

    async def _loop(self) -> None:
        last_check = last_recovery = time.monotonic()
        while True:
            self._wake.clear()
            try:
                await self._claim_while_free()
                now = time.monotonic()
                if now - last_check >= self.poll_interval_s:
                    last_check = now
                    await self._honour_cancel_requests()
                if now - last_recovery >= self._recovery_interval_s:
                    last_recovery = now
                    await self._recover()
            except errors.StoreUnavailable as exc:
                # The database is busy or gone for a moment: queued tasks wait, nothing is lost.
                log.warning("cannot claim tasks: %s", exc.message, extra={"action": "claim_failed"})
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel that lands as
            # the event is set, and stop() would then wait for this loop forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._idle_wait_s()):
                    await self._wake.wait()

    @property
    def _recovery_interval_s(self) -> float:
        # A dead worker's tasks are requeued within 1.5 leases; sweeping more often finds nothing more.
        return max(self.poll_interval_s, self.lease_s / 2)

    def _idle_wait_s(self) -> float:
        """How long to sleep when nothing wakes the loop. With wake-ups (PostgreSQL's NOTIFY) an idle
        worker only polls as a fallback, every 2 s at least: at most one query a second (SPEC §10)."""
        if self.wakeups is not None and not self._running:
            return max(self.poll_interval_s, IDLE_POLL_WITH_WAKEUPS_S)
        return self.poll_interval_s

    async def _claim_while_free(self) -> None:
        # One statement claims as many tasks as there are free slots (SPEC §10: batch claims).
        while self._claiming and self.claims_queued and (free := self._free_slots()) > 0:
            self._claim_in_flight, notices = True, self._notices
            try:
                tasks = await self.store.claim_tasks(self.worker_id, self.lease_s, free, self.pools)
            finally:
                self._claim_in_flight = False
            for task in tasks:
                self._spawn(task)
            self._backlog = len(tasks) == free or self._notices != notices
            if len(tasks) < free:
                return

    def _free_slots(self) -> int:
        return self.max_concurrent - len(self._running) - self._reserved

    async def _recover(self) -> None:
        # This worker's own tasks are requeued too once their lease expired, unless it still runs
        # them: a task whose end it could not record would otherwise stay running until a restart.
        requeued = await self.store.requeue_expired(exclude_worker=self.worker_id, running=list(self._running))
        if requeued:
            log.warning("requeued tasks of a worker that stopped renewing its lease",
                        extra={"action": "tasks_requeued", "count": requeued})
            self.notify()

    async def _honour_cancel_requests(self) -> None:
        """Cancels asked for through another process (or the CLI) reach tasks running here."""
        for task_id, control in list(self._running.items()):
            if not control.user_cancelled and await self.store.is_cancel_requested(task_id):
                log.info("cancel requested elsewhere", extra={"action": "task_cancel_seen", "task_id": task_id})
                self.cancel(task_id)

    def _leases_lost(self, task_ids: set[int]) -> None:
        """The heartbeat found these leases taken: another worker resumed the tasks (this one was
        presumed dead). Stop them; their writes are refused anyway (fencing)."""
        for task_id in task_ids:
            control = self._running.get(task_id)
            if control is not None and control.asyncio_task is not None:
                log.warning("lease lost; stopping task", extra={"action": "lease_lost", "task_id": task_id})
                control.asyncio_task.cancel()

    def _spawn(self, task: Task) -> None:
        if task.id in self._running:
            # Claimed again while still running here (its lease was taken for expired): never
            # run one task twice in one process; the heartbeat renews and keeps it.
            log.warning("task claimed while running here", extra={"action": "duplicate_claim", "task_id": task.id})
            return
        control = Control(launcher=self)
        self._running[task.id] = control
        if self._heartbeat is not None:
            self._heartbeat.hold(task.id)
        control.asyncio_task = asyncio.create_task(self._execute(task, control), name=f"task-{task.id}")

    async def _execute(self, task: Task, control: Control) -> None:
        try:
            await self.executor.execute(task, control)
            if task.status.ended:
                control.ended = task
            elif not control.parked:  # drained: its remaining nodes run after the next start
                await self._release([task.id])
        except asyncio.CancelledError:
            raise
        except Exception:
            # Its end is not recorded: the heartbeat no longer renews it, and once its lease
            # expires this worker's recovery sweep (or another's) requeues it. Keep the traceback.
            log.exception("task could not be recorded", extra={"action": "task_record_failed", "task_id": task.id})
        finally:
            self._running.pop(task.id, None)
            if self._heartbeat is not None:
                self._heartbeat.drop(task.id)
            if self._backlog:  # else the queue was empty at the last look, and nothing was queued since
                self._wake.set()

    async def _release(self, task_ids: list[int]) -> None:
        if not task_ids:
            return
        with contextlib.suppress(errors.StoreUnavailable):  # if not released now, the lease expires
            released = await self.store.release_tasks(self.worker_id, task_ids)
            log.info("released tasks to the queue", extra={"action": "tasks_released", "count": released})
