"""Typed values of the API's answers: Task, NodeRun, File, TaskPage, Plan, Event.

Each keeps the JSON it came from in ``raw``, so nothing the server adds is lost. File values
anywhere in a task's ``result`` or ``data`` become :class:`File` objects.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

FILE_KEY = "$file"


class TaskStatus(enum.StrEnum):
    """A task's status; the value is ``status_name`` on the wire, :attr:`number` is ``status``."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def number(self) -> int:
        return list(TaskStatus).index(self) + 1

    @property
    def ended(self) -> bool:
        return self in (TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELLED)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TaskStatus:
        if isinstance(data.get("status_name"), str):
            return cls(data["status_name"])
        return list(cls)[int(data["status"]) - 1]


@dataclass(frozen=True)
class File:
    """A stored file (``{"$file": id, …}`` on the wire); ``url`` is a signed download link, relative to the server."""

    id: str
    name: str | None = None
    content_type: str | None = None
    size: int | None = None
    sha256: str | None = None
    url: str | None = None

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> File:
        return cls(id=str(value[FILE_KEY]), name=value.get("name"), content_type=value.get("content_type"),
                   size=value.get("size"), sha256=value.get("sha256"), url=value.get("url"))

    def as_value(self) -> dict[str, Any]:
        """What a request gives: the id is enough, the server fills in the rest from its store."""
        return {FILE_KEY: self.id}


@dataclass(frozen=True)
class Error:
    """Why a task or node failed: ``code`` (``node_failed``, ``task_timeout`` …), ``message`` and the node."""

    code: str
    message: str
    node_id: str | None = None

    @classmethod
    def from_json(cls, value: dict[str, Any] | None) -> Error | None:
        if not value:
            return None
        return cls(code=str(value.get("code")), message=str(value.get("message")), node_id=value.get("node_id"))


@dataclass(frozen=True)
class NodeRun:
    """One node inside a task."""

    status: str
    attempts: int = 0
    started: datetime | None = None
    finished: datetime | None = None
    execution_time: float | None = None
    cost: float | None = None
    error: Error | None = None
    cached: bool = False
    items: dict[str, int] | None = None  # a map node's item runs per status, and ``total``
    waiting_for_pool: str | None = None  # pending until a worker of this pool takes the task

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> NodeRun:
        return cls(status=value["status"], attempts=value.get("attempts") or 0, started=_time(value.get("started")),
                   finished=_time(value.get("finished")), execution_time=value.get("execution_time"),
                   cost=value.get("cost"), error=Error.from_json(value.get("error")), cached=bool(value.get("cached")),
                   items=value.get("items"), waiting_for_pool=value.get("waiting_for_pool"))


@dataclass(frozen=True)
class Task:
    """One execution of a flow's selected subgraph. ``result`` holds :class:`File` objects where the
    server sent file values. History pages leave out ``data``, ``result`` and ``nodes`` unless asked."""

    id: int
    flow_id: str
    status: TaskStatus
    revision: int | None = None
    created: datetime | None = None
    started: datetime | None = None
    finished: datetime | None = None
    result: Any = None
    error: Error | None = None
    execution_time: float | None = None
    execution_cost: float | None = None
    mode: str | None = None
    data: Any = None
    nodes: dict[str, NodeRun] = field(default_factory=dict)
    node_counts: dict[str, int] = field(default_factory=dict)
    file_result_link: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def ended(self) -> bool:
        return self.status.ended

    @property
    def succeeded(self) -> bool:
        return self.status is TaskStatus.SUCCEEDED

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> Task:
        return cls(id=int(value["id"]), flow_id=value.get("flow_id") or "", status=TaskStatus.from_json(value),
                   revision=value.get("revision"), created=_time(value.get("created")),
                   started=_time(value.get("started")), finished=_time(value.get("finished")),
                   result=with_files(value.get("result")), error=Error.from_json(value.get("error")),
                   execution_time=value.get("execution_time"), execution_cost=value.get("execution_cost"),
                   mode=value.get("mode"), data=with_files(value.get("data")),
                   nodes={n: NodeRun.from_json(r) for n, r in (value.get("nodes") or {}).items()},
                   node_counts=dict(value.get("node_counts") or {}), file_result_link=value.get("file_result_link"),
                   raw=value)


@dataclass(frozen=True)
class TaskPage:
    """A page of history, newest first; pass ``next_before`` as ``before`` for the next (None: no more)."""

    tasks: list[Task]
    next_before: int | None

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> TaskPage:
        return cls(tasks=[Task.from_json(t) for t in value["tasks"]], next_before=value.get("next_before"))


@dataclass(frozen=True)
class Plan:
    """The dry run of an execute body: what would run, in which parallel levels, at what cost range."""

    run_set: list[str]
    levels: list[list[str]]
    missing_inputs: list[Any]
    cached: list[str]
    cost_min: float
    cost_max: float

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> Plan:
        cost = value.get("estimated_cost") or {}
        return cls(run_set=list(value["run_set"]), levels=[list(level) for level in value["levels"]],
                   missing_inputs=list(value.get("missing_inputs") or []), cached=list(value.get("cached") or []),
                   cost_min=float(cost.get("min", 0.0)), cost_max=float(cost.get("max", 0.0)))


@dataclass(frozen=True)
class Event:
    """One server-sent event: its ``id``, its type (``task``, ``node``, ``progress``, ``log``, ``token``)
    and its data, parsed as JSON when it is JSON (else the text)."""

    id: str | None
    event: str
    data: Any


def with_files(value: Any) -> Any:
    """``value`` with every file value (a JSON object holding ``$file``) turned into a :class:`File`."""
    if isinstance(value, dict):
        if FILE_KEY in value and isinstance(value[FILE_KEY], str):
            return File.from_json(value)
        return {key: with_files(item) for key, item in value.items()}
    if isinstance(value, list):
        return [with_files(item) for item in value]
    return value


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None
