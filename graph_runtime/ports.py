"""What the executor and scheduler need from persistence. ``storage`` implements it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from graph_runtime.flow import Flow
from graph_runtime.models import NodeRun, Task, TaskOutcome


class TaskStore(Protocol):
    """Persistence of tasks and node runs, as the executor sees it.

    Every method commits before it returns: when ``save_node_runs`` returns, the node's status
    and output survive a crash, so successors may start.
    """

    async def claim_next_task(self) -> Task | None:
        """Move the oldest queued task to running, stamp ``started``, return it with its nodes."""

    async def load_flow(self, flow_id: str, revision: int) -> Flow:
        """The definition of ``flow_id`` at ``revision`` (kept even if the flow is deleted)."""

    async def save_node_runs(self, task_id: int, runs: Sequence[NodeRun]) -> None:
        """Insert or update these node runs of ``task_id`` in one transaction."""

    async def finish_task(self, task_id: int, outcome: TaskOutcome, runs: Sequence[NodeRun]) -> None:
        """Record the task's end together with its last node-run changes."""

    async def is_cancel_requested(self, task_id: int) -> bool:
        """Whether someone asked to cancel ``task_id`` (set by the API, read at claim time)."""

    async def requeue_interrupted(self) -> int:
        """Put tasks left ``running`` by a dead process back in the queue; return how many."""
