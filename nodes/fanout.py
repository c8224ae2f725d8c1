"""What ``map`` and ``subflow`` nodes ask of the runtime (SPEC §9): item runs recorded in the
task, and child tasks. The executor implements both and hands them to such nodes as
``ctx.items`` and ``ctx.children``; node code never sees the store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from nodes import errors


@dataclass(frozen=True)
class ChildRequest:
    """A child task to run: a subflow, or one item of a map over a flow.

    Unset start/end/result ids take the child flow's defaults, as an execute request's do.
    """

    flow_id: str
    start_node_id: str | None = None
    end_node_id: str | None = None
    result_node_id: str | None = None
    node_settings: dict[str, Any] = field(default_factory=dict)
    revision: int | None = None  # None: the flow's latest revision when the child is created
    data: dict[str, Any] | None = None  # the start node's data (a map item), over node_settings


@dataclass(frozen=True)
class ChildOutcome:
    """How a child task ended."""

    task_id: int
    succeeded: bool
    result: dict[str, Any] | None
    error: dict[str, Any] | None  # the child's ``{node_id, code, message}`` when it did not succeed
    cost: float


class Children(Protocol):
    """Runs child tasks of the running task (their ``parent_id`` is its id)."""

    async def run(self, key: str, request: ChildRequest) -> ChildOutcome:
        """Create the child named ``key`` (unique within this node run; the same key after a
        resume finds the same child instead of starting another), run it, and return how it ended.

        Raises:
            errors.InvalidParams: the request does not select a valid subgraph of the child flow.
        """


class ItemRuns(Protocol):
    """A map node's item runs, recorded in its task as node runs ``<map>[<index>]``."""

    def begin(self, total: int) -> None:
        """The map has ``total`` items: shown in its node run's ``items`` summary."""

    async def run_node(self, index: int, node_type: str, params: dict[str, Any]) -> tuple[dict[str, Any], float]:
        """Run item ``index`` as a node of ``node_type`` with ``params``: its output and cost.

        An item recorded as succeeded before (the task is being resumed) is not run again: its
        recorded output is returned. A failure is recorded on the item's run and raised.
        """

    async def run_flow(self, index: int, request: ChildRequest) -> ChildOutcome:
        """Run item ``index`` as a child task (its outcome is recorded on the item's run too)."""


class ForwardedError(errors.NodeFailed):
    """A map item or a child task failed: its own error's code and message, passed on."""

    def __init__(self, code: str, message: str, *, node_id: str | None = None) -> None:
        super().__init__(message, node_id=node_id)
        self.code = code
