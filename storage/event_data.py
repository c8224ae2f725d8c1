"""How the data of task and node events is made and stored: a snapshot of the task or node run as
an array, by position (:data:`graph_runtime.events.EventData`), and back to the typed value.

The hub makes it when the run or task changes (the tuple is the snapshot: no copy of the run is
made), the store writes it as it is, and the API decodes it when someone reads the event.

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

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from graph_runtime.events import EventKind
from graph_runtime.models import NodeRun, NodeStatus, RunError, Task, TaskRequest, TaskStatus, is_item_run

_TASK_STATUS = {status.value: status for status in TaskStatus}
_NODE_STATUS = {status.value: status for status in NodeStatus}


def node_data(run: NodeRun) -> tuple[Any, ...]:
    """A node event's data: ``run`` as an array (a tuple until it is stored). Made when the run
    changed, as the snapshot itself: a tuple of the values the run holds now."""
    # orjson writes the status (a str enum) and the aware datetimes itself, in C.
    if (run.error is None and not run.cached and run.saved_cost is None and run.items is None
            and run.waiting_for_pool is None):
        # What most runs are: the last five fields left out (a third of a chain's bytes), read back as unset.
        return run.node_id, run.status, run.started, run.finished, run.execution_time, run.cost, run.attempts
    return (run.node_id, run.status, run.started, run.finished, run.execution_time, run.cost, run.attempts,
            run.error.as_dict() if run.error is not None else None, run.cached, run.saved_cost,
            dict(run.items) if run.items is not None else None, run.waiting_for_pool)


_SHORT = 7  # the length of a run's data when its last five fields are unset (see node_data)


def task_data(task: Task) -> tuple[Any, ...]:
    """A task event's data: ``task`` as an array, each of its nodes' runs as :func:`node_data`'s,
    or only its id while it has not run (a task's first event lists every node so)."""
    pending = NodeStatus.PENDING
    # Not run: pending, never tried, never started, nothing else set (its data is short).
    return (task.id, task.flow_id, task.revision, task.request.as_data(), task.status, task.created,
            task.started, task.finished, task.result, task.execution_time, task.execution_cost,
            task.error.as_dict() if task.error is not None else None, task.parent_id,
            [run.node_id if len(data := node_data(run)) == _SHORT and data[1] is pending and not data[6]
             and data[2] is None else data for run in task.nodes.values() if not is_item_run(run.node_id)])


def decode(kind: EventKind, stored: Any) -> Task | NodeRun | Mapping[str, Any]:
    """The typed value of an event of ``kind``: what :func:`node_data` or :func:`task_data` made
    (as made, or read back from JSON), a node's mapping as it is."""
    if isinstance(stored, (list, tuple)):
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


def _run_of(stored: list[Any] | tuple[Any, ...] | str) -> NodeRun:
    if isinstance(stored, str):
        return NodeRun(stored)
    if len(stored) == _SHORT:
        node_id, status, started, finished, execution_time, cost, attempts = stored
        return NodeRun(node_id, _NODE_STATUS[status], _dt(started), _dt(finished), execution_time, cost, attempts)
    (node_id, status, started, finished, execution_time, cost, attempts, error, cached, saved_cost, items,
     waiting_for_pool) = stored
    return NodeRun(node_id, _NODE_STATUS[status], _dt(started), _dt(finished), execution_time, cost, attempts,
                   RunError.from_dict(error), None, cached, saved_cost, items, waiting_for_pool)



def _dt(value: str | datetime | None) -> datetime | None:
    return value if value is None or isinstance(value, datetime) else datetime.fromisoformat(value)
