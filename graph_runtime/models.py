"""Task and node-run records and their statuses: the values the executor and storage exchange.

Task states (``TaskStatus``; the number is Scade's ``status``)::

    queued(1) ──claim──▶ running(2) ──▶ succeeded(3) | failed(4) | cancelled(5)
        └──────────────────cancel───────────────────────────────▶ cancelled(5)

Node-run states (``NodeStatus``)::

    pending ──▶ running ──▶ succeeded | failed | cancelled
       └──────────────────▶ skipped  (an upstream failure or a cancel stopped the task first, or a
                                       switch took another branch)
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


@dataclass(frozen=True)
class RunError:
    """Why a node run or a task did not succeed: the ``error`` of SPEC §3, as a value.

    Attributes:
        code: a stable snake_case code (``node_failed``, ``node_timeout``, ``crashed``…).
        message: what happened, for a person.
        node_id: the node it happened in; None for the task as a whole (a cancel before start).
    """

    code: str
    message: str
    node_id: str | None = None

    @classmethod
    def of(cls, exc: Any, node_id: str | None = None) -> RunError:
        """The error of an exception with ``code`` and ``message`` (a ``GraphRuntimeError``)."""
        return cls(exc.code, exc.message, node_id if node_id is not None else exc.node_id)

    @classmethod
    def from_dict(cls, value: dict[str, Any] | None) -> RunError | None:
        """From its stored or wire form (``None`` stays ``None``)."""
        if value is None:
            return None
        return cls(str(value.get("code", "internal")), str(value.get("message", "")), value.get("node_id"))

    def as_dict(self) -> dict[str, Any]:
        """The stored and wire form: ``{"node_id", "code", "message"}``."""
        return {"node_id": self.node_id, "code": self.code, "message": self.message}


class TaskStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def number(self) -> int:
        """Scade's numeric status: 3 is the only success."""
        return _TASK_NUMBERS[self]

    @classmethod
    def from_number(cls, number: int) -> TaskStatus:
        return _TASK_BY_NUMBER[number]

    @property
    def ended(self) -> bool:
        return self in _ENDED


# A set made once: the tuple of members named through the class cost ~220 ns a call on Python 3.11
# (each ``TaskStatus.X`` read goes through the enum's metaclass), the set lookup ~15.
_ENDED = frozenset((TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELLED))
_TASK_NUMBERS = {status: i for i, status in enumerate(TaskStatus, start=1)}
_TASK_BY_NUMBER = {i: status for status, i in _TASK_NUMBERS.items()}


class NodeStatus(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class TaskTrigger:
    """Which trigger of the flow started a task (SPEC §11); a task started by execute has none.

    Attributes:
        type: ``webhook``, ``schedule`` or ``flow``.
        index: the trigger's position in the flow's ``triggers``.
        slot: a schedule's slot (ISO 8601 UTC) the task is for.
        task_id: a flow trigger's source: the ended task whose JSON is the start node's data.
    """

    type: str
    index: int
    slot: str | None = None
    task_id: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """The stored and wire form: ``type`` and ``index``, then ``slot`` or ``task_id`` when set."""
        data: dict[str, Any] = {"type": self.type, "index": self.index}
        if self.slot is not None:
            data["slot"] = self.slot
        if self.task_id is not None:
            data["task_id"] = self.task_id
        return data

    @classmethod
    def from_dict(cls, value: dict[str, Any] | None) -> TaskTrigger | None:
        if value is None:
            return None
        return cls(str(value["type"]), int(value["index"]), value.get("slot"), value.get("task_id"))


@dataclass(frozen=True)
class TaskRequest:
    """What an execute request asked for, with defaults filled in (Scade's ``data``)."""

    start_node_id: str
    end_node_id: str
    result_node_id: str
    node_settings: dict[str, Any] = field(default_factory=dict)
    init_context: dict[str, Any] = field(default_factory=dict)
    timeout_s: float | None = None
    mode: str = "prod"  # "prod" or "dev" (SPEC §7 Modes): which value of each secret its nodes get
    from_task_id: int | None = None  # rerun from a node (SPEC §9): the earlier task the inputs came from
    # {node: {input: value}} taken from that task, kept here so a resumed task never needs it again
    from_task_inputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Where to POST the task, signed, when it ends (SPEC §11 callbacks); None: nowhere (but the flow's on_end).
    callback_url: str | None = None
    trigger: TaskTrigger | None = None  # the trigger that started it (SPEC §11); None for an execute
    # The caller's W3C traceparent (SPEC §11 traces): kept so whichever process runs the task continues
    # the caller's trace. None when the request sent none.
    traceparent: str | None = None

    def as_data(self) -> dict[str, Any]:
        """Scade's ``data`` echo: ``node_id`` first and always null; ``mode`` only when not ``prod``."""
        data: dict[str, Any] = {
            "node_id": None,
            "start_node_id": self.start_node_id,
            "end_node_id": self.end_node_id,
            "result_node_id": self.result_node_id,
            "init_context": self.init_context,
            "node_settings": self.node_settings,
        }
        if self.timeout_s is not None:
            data["timeout_s"] = self.timeout_s
        if self.mode != "prod":  # Scade's echo stays exactly Scade's for the default mode
            data["mode"] = self.mode
        if self.from_task_id is not None:
            data["from_task_id"] = self.from_task_id
            data["from_task_inputs"] = self.from_task_inputs
        if self.callback_url is not None:  # left out otherwise: Scade's echo stays exactly Scade's
            data["callback_url"] = self.callback_url
        if self.trigger is not None:  # absent for an execute: Scade's echo stays Scade's
            data["trigger"] = self.trigger.as_dict()
        if self.traceparent is not None:  # absent unless the caller sent one: Scade's echo stays Scade's
            data["traceparent"] = self.traceparent
        return data

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> TaskRequest:
        return cls(
            start_node_id=data["start_node_id"],
            end_node_id=data["end_node_id"],
            result_node_id=data["result_node_id"],
            node_settings=data.get("node_settings") or {},
            init_context=data.get("init_context") or {},
            timeout_s=data.get("timeout_s"),
            mode=data.get("mode") or "prod",
            from_task_id=data.get("from_task_id"),
            from_task_inputs=data.get("from_task_inputs") or {},
            callback_url=data.get("callback_url"),
            trigger=TaskTrigger.from_dict(data.get("trigger")),
            traceparent=data.get("traceparent"),
        )


@dataclass(slots=True)
class NodeRun:
    """One node inside a task."""

    node_id: str
    status: NodeStatus = NodeStatus.PENDING
    started: datetime | None = None
    finished: datetime | None = None
    execution_time: float | None = None
    cost: float | None = None
    attempts: int = 0
    error: RunError | None = None
    output: dict[str, Any] | None = None
    cached: bool = False  # served from the output cache (SPEC §9): it did not run, its cost is 0
    saved_cost: float | None = None  # when cached: what the run that filled the cache cost
    # A map node's items so far, by status (``{"total": n, "succeeded": …}``): what the task view
    # shows instead of a thousand item runs (SPEC §9 map). None for every other node.
    items: dict[str, int] | None = None
    # Pending because it runs only on a worker serving this pool (SPEC §10) and none has taken the
    # task yet; cleared when it starts. None for every node that is not waiting so.
    waiting_for_pool: str | None = None

    def copy(self) -> NodeRun:
        """A snapshot (shallow: error and output are shared, never mutated in place)."""
        return NodeRun(self.node_id, self.status, self.started, self.finished, self.execution_time, self.cost,
                       self.attempts, self.error, self.output, self.cached, self.saved_cost,
                       dict(self.items) if self.items is not None else None, self.waiting_for_pool)


def item_run_id(map_node_id: str, index: int) -> str:
    """The node-run id of item ``index`` of a map node: ``map1[3]`` (flow node ids never hold ``[``)."""
    return f"{map_node_id}[{index}]"


def is_item_run(node_id: str) -> bool:
    """Whether a node-run id names a map item (``map1[3]``) rather than a node of the flow."""
    # ``in``, not endswith, which parses its arguments (3x slower).
    return _ITEM_MARK in node_id


_ITEM_MARK = "]"  # flow node ids are [A-Za-z0-9_.-] (flow.ID_PATTERN): only an item's holds a bracket


def flow_runs(task: Task) -> list[NodeRun]:
    """``task``'s runs of its flow's nodes (not its maps' items), in its order."""
    # is_item_run's test written out, not called for each: a task's two task events list every node.
    return [run for run in task.nodes.values() if _ITEM_MARK not in run.node_id]


@dataclass(frozen=True)
class Lease:
    """A worker's hold on a task: which worker, and which claim of the task (the fencing epoch).

    Every claim of a task increments its ``claims`` counter, so ``(worker, epoch)`` names one
    run of one task. A write made under a lease that is no longer the task's current one (it
    expired and another worker claimed the task) is refused by the store.
    """

    worker: str
    epoch: int


@dataclass(frozen=True)
class Fenced:
    """What the fence kept out of a grouped commit (``TaskStore.save_node_runs_many``)."""

    tasks: frozenset[int] = frozenset()  # tasks whose node runs were not written: their lease is lost
    # (task, epoch) of the event batches not stored: made under a claim that is no longer the task's
    events: frozenset[tuple[int, int]] = frozenset()


NOTHING_FENCED = Fenced()


@dataclass(frozen=True)
class Claim:
    """A task created already claimed, by ``worker`` for ``lease_s``: an execute with ``?wait``
    whose process runs it at once (one statement: no claim after it, no wake-up for others)."""

    worker: str
    lease_s: float


@dataclass(slots=True)
class Task:
    """One execution of a selected subgraph of a flow revision."""

    id: int
    flow_id: str
    revision: int
    request: TaskRequest
    status: TaskStatus = TaskStatus.QUEUED
    created: datetime | None = None
    started: datetime | None = None
    finished: datetime | None = None
    result: dict[str, Any] | None = None
    execution_time: float | None = None
    execution_cost: float | None = None
    error: RunError | None = None
    nodes: dict[str, NodeRun] = field(default_factory=dict)
    claims: int = 0  # how many times a worker took it; above 1 it is being resumed
    interruptions: int = 0  # how many times the worker running it died or lost its lease
    lease: Lease | None = None  # set when a worker claims it; its writes carry it
    parent_id: int | None = None  # the task whose subflow or map node started it (Scade's field)


def start_order_key(run: NodeRun) -> tuple[bool, datetime, str]:
    """How node runs are listed everywhere: by start, unstarted last, then by id in code-point order
    (not a database's collation, which differs between PostgreSQL locales)."""
    return run.started is None, run.started or _EPOCH, run.node_id


def in_start_order(task: Task) -> Task:
    """``task`` with its node runs in the order the store lists them (:func:`start_order_key`)."""
    return dataclasses.replace(task, nodes={run.node_id: run for run in sorted(task.nodes.values(), key=start_order_key)})


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class TaskOutcome:
    """How a task ended, written in one transaction by :meth:`TaskStore.finish_task`."""

    status: TaskStatus
    finished: datetime
    execution_time: float
    execution_cost: float
    result: dict[str, Any] | None = None
    error: RunError | None = None
