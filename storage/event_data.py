"""How the data of stored task and node events is written: the typed snapshot an event carries
(:data:`graph_runtime.events.EventData`) as a JSON array, by position, and back.

An array, not the API's JSON: writing a task's events is on the hot path of every task, and
nobody reads most of them, so they are stored as cheaply as they can be (no view rendered, no
key repeated: a 10-node chain's batch is less than half the bytes) and rendered by the API when read.
An event stored as a JSON object (by the versions before this encoding) reads back as that object.
A node run with no error, cache or map items, the most common, is only its first seven fields.
A snapshot leaves out what no event shows: a node's output (its row has it), a task's claims, a
map's item runs (its own run counts them). A node that has not run yet is just its id (a task's
first event lists every node so).

Every event is stored whole, not pointed at rows: a task's rows change after its events (a
released claim clears ``started``), and a stream's history must not read a task's node runs (a
thousand streams opening on a 1,000-node task would read them a thousand times).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from graph_runtime.events import EventData, EventKind
from graph_runtime.models import NodeRun, NodeStatus, RunError, Task, TaskRequest, TaskStatus, is_item_run

_TASK_STATUS = {status.value: status for status in TaskStatus}
_NODE_STATUS = {status.value: status for status in NodeStatus}


def encode(data: EventData) -> Any:
    """What is stored for ``data``: an array for a node run or a task, a mapping as it is."""
    kind = type(data)
    if kind is NodeRun:  # the most common: inline, a call less for each of a chain's twenty
        run: NodeRun = data  # type: ignore[assignment]
        # orjson writes the status (a str enum) and the aware datetimes itself, in C.
        if _tail_unset(run):
            # What most runs are: the last five fields left out (a third of a chain's bytes), read back as unset.
            return run.node_id, run.status, run.started, run.finished, run.execution_time, run.cost, run.attempts
        return (run.node_id, run.status, run.started, run.finished, run.execution_time, run.cost, run.attempts,
                run.error.as_dict() if run.error is not None else None, run.cached, run.saved_cost, run.items,
                run.waiting_for_pool)
    if kind is Task:
        task: Task = data  # type: ignore[assignment]
        return (task.id, task.flow_id, task.revision, task.request.as_data(), task.status, task.created,
                task.started, task.finished, task.result, task.execution_time, task.execution_cost,
                task.error.as_dict() if task.error is not None else None, task.parent_id,
                [run.node_id if _untouched(run) else encode(run) for run in task.nodes.values()
                 if not is_item_run(run.node_id)])
    return data


def _tail_unset(run: NodeRun) -> bool:
    """Whether the run's last five stored fields (error, cached, saved_cost, items, waiting_for_pool) are unset."""
    return (run.error is None and not run.cached and run.saved_cost is None and run.items is None
            and run.waiting_for_pool is None)


def _untouched(run: NodeRun) -> bool:
    return run.status is NodeStatus.PENDING and not run.attempts and run.started is None and _tail_unset(run)


def decode(kind: EventKind, stored: Any) -> EventData:
    """The event data ``encode`` wrote for an event of ``kind``."""
    if isinstance(stored, list):
        if kind is EventKind.NODE:
            return _run_of(stored)
        if kind is EventKind.TASK:
            (task_id, flow_id, revision, request, status, created, started, finished, result, execution_time,
             execution_cost, error, parent_id, runs) = stored
            nodes = {run.node_id: run for run in map(_run_of, runs)}  # a str: a node that has not run
            return Task(id=task_id, flow_id=flow_id, revision=revision, request=TaskRequest.from_data(request),
                        status=_TASK_STATUS[status], created=_dt(created), started=_dt(started),
                        finished=_dt(finished), result=result, execution_time=execution_time,
                        execution_cost=execution_cost, error=RunError.from_dict(error), nodes=nodes,
                        parent_id=parent_id)
    return stored  # type: ignore[no-any-return]


def _run_of(stored: list[Any] | str) -> NodeRun:
    if isinstance(stored, str):
        return NodeRun(stored)
    if len(stored) == _SHORT:
        node_id, status, started, finished, execution_time, cost, attempts = stored
        return NodeRun(node_id, _NODE_STATUS[status], _dt(started), _dt(finished), execution_time, cost, attempts)
    (node_id, status, started, finished, execution_time, cost, attempts, error, cached, saved_cost, items,
     waiting_for_pool) = stored
    return NodeRun(node_id, _NODE_STATUS[status], _dt(started), _dt(finished), execution_time, cost, attempts,
                   RunError.from_dict(error), None, cached, saved_cost, items, waiting_for_pool)


_SHORT = 7  # a run whose last five fields are unset (see encode)


def _dt(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)
