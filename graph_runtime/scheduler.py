"""The worker pool: claims queued tasks FIFO and runs at most ``max_concurrent`` at once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field

from graph_runtime import errors
from graph_runtime.executor import Control, Executor
from graph_runtime.models import Task
from graph_runtime.ports import TaskStore

log = logging.getLogger(__name__)


@dataclass
class Scheduler:
    """Claims tasks from the store whenever a slot is free.

    ``notify()`` wakes it at once when this process queues a task; ``poll_interval_s`` picks up
    tasks queued elsewhere (the CLI, another process).
    """

    store: TaskStore
    executor: Executor
    max_concurrent: int = 10
    poll_interval_s: float = 1.0
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _running: dict[int, Control] = field(default_factory=dict)
    _ended: dict[int, list[asyncio.Event]] = field(default_factory=dict)
    _loop_task: asyncio.Task[None] | None = None

    async def start(self) -> int:
        """Requeue tasks a dead process left running, then start claiming. Returns the count requeued."""
        requeued = await self.store.requeue_interrupted()
        if requeued:
            log.info("resuming interrupted tasks", extra={"action": "tasks_requeued", "count": requeued})
        self._loop_task = asyncio.create_task(self._loop(), name="scheduler")
        return requeued

    async def stop(self) -> None:
        """Stop claiming and interrupt running tasks; they stay resumable."""
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
        tasks = [c.asyncio_task for c in self._running.values() if c.asyncio_task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def notify(self) -> None:
        """A task was queued: look for work now."""
        self._wake.set()

    @property
    def running_count(self) -> int:
        return len(self._running)

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

    def ended_event(self, task_id: int) -> asyncio.Event:
        """A new event set when ``task_id`` ends here; take it before re-reading the task's status.

        Each waiter has its own event, so one waiter giving up never leaves another unwoken.
        """
        event = asyncio.Event()
        self._ended.setdefault(task_id, []).append(event)
        return event

    def mark_ended(self, task_id: int) -> None:
        """Wake every waiter of ``task_id`` (also used for a task cancelled while queued)."""
        for event in self._ended.pop(task_id, []):
            event.set()

    def forget_waiter(self, task_id: int, event: asyncio.Event) -> None:
        waiters = self._ended.get(task_id)
        if waiters and event in waiters:
            waiters.remove(event)
            if not waiters:
                del self._ended[task_id]

    async def _loop(self) -> None:
        last_cancel_check = time.monotonic()
        while True:
            self._wake.clear()
            try:
                while len(self._running) < self.max_concurrent:
                    task = await self.store.claim_next_task()
                    if task is None:
                        break
                    self._spawn(task)
                if time.monotonic() - last_cancel_check >= self.poll_interval_s:
                    last_cancel_check = time.monotonic()
                    await self._honour_cancel_requests()
            except errors.GraphRuntimeError as exc:
                # The database is busy or gone for a moment: queued tasks wait, nothing is lost.
                log.warning("cannot claim tasks: %s", exc.message, extra={"action": "claim_failed"})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_interval_s)

    async def _honour_cancel_requests(self) -> None:
        """Cancels asked for through another process (or the CLI) reach tasks running here."""
        for task_id, control in list(self._running.items()):
            if not control.user_cancelled and await self.store.is_cancel_requested(task_id):
                log.info("cancel requested elsewhere", extra={"action": "task_cancel_seen", "task_id": task_id})
                self.cancel(task_id)

    def _spawn(self, task: Task) -> None:
        control = Control()
        self._running[task.id] = control
        control.asyncio_task = asyncio.create_task(self._execute(task, control), name=f"task-{task.id}")

    async def _execute(self, task: Task, control: Control) -> None:
        try:
            await self.executor.execute(task, control)
        except asyncio.CancelledError:
            raise
        except Exception:
            # The task row stays running and is resumed after a restart; never lose the traceback.
            log.exception("task could not be recorded", extra={"action": "task_record_failed", "task_id": task.id})
        finally:
            self._running.pop(task.id, None)
            self.mark_ended(task.id)
            self._wake.set()
