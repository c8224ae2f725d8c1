"""Child tasks (SPEC §9): what ``subflow`` nodes and maps over a flow run.

A child is an ordinary task whose ``parent_id`` is the running task. It is created with an
idempotency key made of the parent task, the node and the item, so the node resumed after a
crash finds the child it started instead of starting another, and a child that succeeded is
not run again. The parent's worker runs the child itself, beside its slots (a parent waiting
for children in every slot would otherwise wait forever); a child already taken by another
worker, or requeued after a crash, is waited for.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from graph_runtime import errors, selection
from graph_runtime.models import Claim, Task, TaskRequest, TaskStatus
from graph_runtime.ports import TaskStore
from nodes import errors as node_errors
from nodes.fanout import ChildOutcome, ChildRequest
from nodes.limits import Limits
from nodes.registry import Registry

if TYPE_CHECKING:
    from graph_runtime.executor import Executor

log = logging.getLogger(__name__)

WAIT_POLL_S = (0.05, 1.0)
"""How often a child running elsewhere is looked at: from the first value, doubling to the second."""


class ChildLauncher(Protocol):
    """Runs a child task to its end (the scheduler, or :class:`InlineLauncher`)."""

    def claim_here(self) -> Claim | None:
        """A claim to create a child under, to be run by :meth:`run_child` at once (None: queue it)."""

    def adopt(self, task: Task) -> None:
        """``task`` was created under :meth:`claim_here`'s claim: it is this launcher's to run
        (called as soon as the insert is done, whatever its caller does next)."""

    async def run_child(self, task_id: int) -> Task:
        """Run ``task_id`` here: adopted, or claimed if it is queued; else wait until it ends.
        Returns it ended."""

    def cancel(self, task_id: int) -> bool:
        """Cancel ``task_id`` if it runs here (as a user's cancel)."""


@dataclass
class InlineLauncher:
    """Runs children inside the caller's executor, without a scheduler (tests, one-off runs)."""

    executor: Executor
    worker: str = "inline"
    lease_s: float = 3600.0
    _adopted: dict[int, Task] = field(default_factory=dict)  # created under claim_here's claim, not run yet

    def claim_here(self) -> Claim | None:
        return Claim(self.worker, self.lease_s)

    def adopt(self, task: Task) -> None:
        self._adopted[task.id] = task  # run_child runs it inline, in the caller

    async def run_child(self, task_id: int) -> Task:
        if (adopted := self._adopted.pop(task_id, None)) is not None:
            return await self.executor.execute(adopted)
        delay = WAIT_POLL_S[0]
        while True:
            claimed = await self.executor.store.claim_task(task_id, self.worker, self.lease_s)
            if claimed is not None:
                return await self.executor.execute(claimed)
            current = await self.executor.store.get_task(task_id)
            if current.status.ended:
                return current
            await asyncio.sleep(delay)
            delay = min(delay * 2, WAIT_POLL_S[1])

    def cancel(self, task_id: int) -> bool:
        return False  # the flag the store set stops it (the executor checks it between nodes)


@dataclass
class TaskChildren:
    """``ctx.children`` of one node run: creates and runs its child tasks."""

    store: TaskStore
    registry: Registry
    limits: Limits
    launcher: ChildLauncher
    parent: Task
    node_id: str

    async def run(self, key: str, request: ChildRequest) -> ChildOutcome:
        """See :meth:`nodes.fanout.Children.run`.

        Raises:
            nodes.errors.InvalidParams: no such flow or revision, or the request selects nothing
                valid in it (the same checks as an execute request).
        """
        try:
            flow, revision, _ = await self.store.get_flow(request.flow_id, request.revision)
            task_request = _task_request(flow, request, self.parent)
            plan = selection.plan(flow, self.registry, task_request, limits=self.limits)
        except errors.StoreUnavailable:
            raise
        except node_errors.GraphRuntimeError as exc:
            field = f"flow.{exc.field}" if getattr(exc, "field", None) else "flow_id"
            raise node_errors.InvalidParams(f"child flow {request.flow_id!r}: {exc.message}", field=field) from exc
        creating = self.store.create_task(
            flow.id, revision, task_request,
            idempotency_key=f"child:{self.parent.id}:{self.node_id}{key}",
            fingerprint=f"child:{self.parent.id}", node_ids=plan.order, parent_id=self.parent.id,
            wake=False,  # run_child below runs it here, at once
            claim=self.launcher.claim_here(),  # created running: no claim after it (a map's thousand items: a thousand)
        )
        # Handed to the launcher as soon as it is inserted, even if this node is cancelled
        # meanwhile: never left running with nobody running it. (On PostgreSQL a parent whose
        # cancel reads its children before this insert commits misses it, and it runs to its end,
        # as a queued child inserted in that moment did before.)
        child, created = await handed_on(creating, self._adopt)
        if created:
            log.info("child task created", extra={"action": "child_queued", "task_id": child.id,
                                                  "parent_id": self.parent.id, "node_id": self.node_id,
                                                  "running_here": child.lease is not None})
        ended = child if child.status.ended else await self.launcher.run_child(child.id)
        return ChildOutcome(
            task_id=ended.id,
            succeeded=ended.status is TaskStatus.SUCCEEDED,
            result=ended.result,
            error=ended.error.as_dict() if ended.error is not None else None,
            cost=ended.execution_cost or 0.0,
        )


    def _adopt(self, child: Task | None) -> None:
        if child is not None and child.lease is not None:  # made running under the launcher's claim, not queued
            self.launcher.adopt(child)


async def handed_on(creating: Coroutine[Any, Any, tuple[Task, bool]],
                    hand_on: Callable[[Task | None], None]) -> tuple[Task, bool]:
    """Await a task's creation (``TaskStore.create_task``) and hand it on as soon as the insert is
    done: ``hand_on(task)`` if it was created, ``hand_on(None)`` if not (an earlier task, not ours;
    an error). A caller cancelled meanwhile (a client gone, a Ctrl-C, a node's timeout) stops
    neither: a task created running under this process's claim is run, never left running with
    nobody running it."""
    job = asyncio.ensure_future(creating)

    def done(finished: asyncio.Future[tuple[Task, bool]]) -> None:
        made = not finished.cancelled() and finished.exception() is None and finished.result()[1]
        hand_on(finished.result()[0] if made else None)

    job.add_done_callback(done)  # before the caller resumes: callbacks run in the order added
    return await asyncio.shield(job)


def _task_request(flow: Any, request: ChildRequest, parent: Task) -> TaskRequest:
    s, e, r = selection.resolve_ids(flow, request.start_node_id, request.end_node_id, request.result_node_id)
    settings = {node: dict(values) for node, values in request.node_settings.items()}
    if request.data is not None:
        start = settings.setdefault(s, {})
        start["data"] = {**start.get("data", {}), **request.data}
    # The child runs in its parent's mode: a dev task's children get the dev secrets too.
    return TaskRequest(start_node_id=s, end_node_id=e, result_node_id=r, node_settings=settings,
                       mode=parent.request.mode)
