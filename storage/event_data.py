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
thousand streams opening on a 1,000-node task would read them a thousand times). The one pointer:
a final task event's run that is exactly what its node's last event in the same stored row said
is that event's number (:func:`with_references`), read back with the row (:func:`resolved`); a
chain nobody watched stored each run's last state twice, a quarter of its bytes.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from graph_runtime.events import Entry, EventKind
from graph_runtime.models import NodeRun, NodeStatus, RunError, Task, TaskRequest, TaskStatus, flow_runs

_TASK_STATUS = {status.value: status for status in TaskStatus}
_NODE_STATUS = {status.value: status for status in NodeStatus}


def node_data(run: NodeRun) -> tuple[Any, ...]:
    """A node event's data: ``run`` as an array (a tuple until it is stored). Made when the run
    changed, as the snapshot itself: a tuple of the values the run holds now."""
    # orjson writes the status (a str enum) and the aware datetimes itself, in C.
    if (run.error is None and not run.cached and run.saved_cost is None and run.items is None
            and run.waiting_for_pool is None):  # _untouched(run), written out: a call less a node event
        # What most runs are: the last five fields left out (a third of a chain's bytes), read back as unset.
        return run.node_id, run.status, run.started, run.finished, run.execution_time, run.cost, run.attempts
    return (run.node_id, run.status, run.started, run.finished, run.execution_time, run.cost, run.attempts,
            run.error.as_dict() if run.error is not None else None, run.cached, run.saved_cost,
            dict(run.items) if run.items is not None else None, run.waiting_for_pool)


_SHORT = 7  # the length of a run's data when its last five fields are unset (see node_data)


def task_data(task: Task, told: Mapping[str, tuple[Any, ...]] | None = None) -> tuple[Any, ...]:
    """A task event's data: ``task`` as an array, each of its nodes' runs as :func:`node_data`'s,
    or only its id while it has not run (a task's first event lists every node so).

    ``told``: the data of each node's last node event; a run still as that says (the same status,
    start, end and tries, and not a map, whose items count on silently: whatever else changes a run
    changes one of those) is given as that same object, neither made nor stored a second time
    (:func:`with_references`: a chain's stored batch went from 3.3 to 2.4 KB)."""
    told = told or {}
    return (task.id, task.flow_id, task.revision, task.request.as_data(), task.status, task.created,
            task.started, task.finished, task.result, task.execution_time, task.execution_cost,
            task.error.as_dict() if task.error is not None else None, task.parent_id,
            [data if (data := told.get(run.node_id)) is not None and data[1] is run.status and data[2] is run.started
             and data[3] is run.finished and data[6] == run.attempts and run.items is None
             else run.node_id if run.status is _PENDING and run.started is None and not run.attempts and _untouched(run)
             else node_data(run) for run in flow_runs(task)])


_PENDING = NodeStatus.PENDING


def _untouched(run: NodeRun) -> bool:
    """Whether none of a run's last five fields is set (its data is then its first seven)."""
    return (run.error is None and not run.cached and run.saved_cost is None and run.items is None
            and run.waiting_for_pool is None)


_TASK_KIND = EventKind.TASK
_NUMBER, _DATA = operator.itemgetter(0), operator.itemgetter(2)
_RUNS = 13  # where task_data's array holds its runs


def with_references(entries: list[Entry]) -> list[Entry]:
    """One stored row's entries, ending with a task's final event: each of its runs that is the
    very data of a node event of the row (task_data's ``told``) given as that event's number
    instead, which :func:`resolved` reads back. Only within a row, so whoever reads the final event
    has what it points at: a chain nobody watched stores its final event's ten runs as ten numbers.
    New entries: a batch's are never changed (a failed commit is retried with them)."""
    seq, kind, data = entries[-1]
    if kind is not _TASK_KIND or not isinstance(data, tuple) or len(entries) == 1:
        return entries
    # In C, no Python call per entry or run: the number of each entry by its data's identity (a
    # run is never another entry's data but its node event's), then each run as that number, or itself.
    made = dict(zip(map(id, map(_DATA, entries)), map(_NUMBER, entries), strict=True))
    runs = list(map(made.get, map(id, data[_RUNS]), data[_RUNS]))
    return [*entries[:-1], (seq, kind, (*data[:_RUNS], runs))]


def resolved(entries: list[Any]) -> list[Any]:
    """A stored row's entries as :func:`with_references` wrote them, each reference in its final
    task event replaced by the data it points at (in place: they were just read)."""
    data = entries[-1][-1]
    if isinstance(data, list) and len(data) > _RUNS and any(type(run) is int for run in data[_RUNS]):
        said = {entry[0]: entry[-1] for entry in entries}
        data[_RUNS] = [said[run] if type(run) is int else run for run in data[_RUNS]]
    return entries


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
