"""JSON views of tasks, flows and keys: the exact wire shapes of SPEC §3."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from graph_runtime.events import EventData, EventKind
from graph_runtime.flow import Flow
from graph_runtime.models import NodeRun, Task, is_item_run
from nodes.files import FILE_KEY, file_values, is_file_value
from storage import event_data
from storage.convert import ApiKeyRecord
from storage.secrets import SecretInfo
from storage.task_history import HistoryPage, TaskSummary

TASK_TYPE_FLOW = 4  # Scade's task_type for a flow execution


def timestamp(value: datetime | None) -> datetime | str | None:
    """ISO 8601 in UTC with microseconds and a ``Z``, once through :mod:`nodes.codec`.

    A UTC datetime with microseconds is returned as it is: orjson (``OPT_UTC_Z``) writes exactly
    that text, in C, while the response is encoded; a poll has a few dozen timestamps. orjson
    leaves out a zero fraction, so those (one in a million) are formatted here.
    """
    if value is None:
        return None
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    if value.microsecond:
        return value
    return timestamp_text(value)


def timestamp_text(value: datetime) -> str:
    """The same text as :func:`timestamp`, as a string (for output that is not JSON)."""
    return value.astimezone(UTC).isoformat(timespec="microseconds")[:-6] + "Z"


def node_view(run: NodeRun, *, output: bool = False) -> dict[str, Any]:
    """A node run; with ``output`` its output too (``GET /task/{id}?include=outputs``, the dashboard's
    node panel): left out by default, since a poll would otherwise carry every node's output."""
    view = {
        "status": run.status.value,
        "started": timestamp(run.started),
        "finished": timestamp(run.finished),
        "execution_time": run.execution_time,
        "cost": run.cost,
        "attempts": run.attempts,
        "error": run.error.as_dict() if run.error else None,
        "cached": run.cached,
        "saved_cost": run.saved_cost,
    }
    if run.items is not None:  # a map node: its items by status, in place of its item runs
        view["items"] = run.items
    if run.waiting_for_pool is not None:  # SPEC §10: pending until a worker of its pool takes the task
        view["waiting_for_pool"] = run.waiting_for_pool
    if output:
        view["output"] = run.output
    return view


def task_view(task: Task, *, outputs: bool = False, items: bool = False) -> dict[str, Any]:
    """Scade's task fields with their names and meanings, then ours."""
    return {
        "id": task.id,
        "data": task.request.as_data(),
        "status": task.status.number,
        "status_name": task.status.value,
        "created": timestamp(task.created),
        "finished": timestamp(task.finished),
        "result": task.result,
        "execution_time": task.execution_time,
        "execution_cost": task.execution_cost,
        "parent_id": task.parent_id,
        "ref_id": f"flow:{task.flow_id};",
        "task_type": TASK_TYPE_FLOW,
        "is_hide": False,
        "public_access_token": None,
        "file_result_link": None,
        "flow_id": task.flow_id,
        "revision": task.revision,
        "started": timestamp(task.started),
        "error": task.error.as_dict() if task.error else None,
        "mode": task.request.mode,
        "trigger": task.request.trigger.as_dict() if task.request.trigger is not None else None,
        "saved_cost": saved_cost(task),
        # A map's item runs (``map1[3]``) only when asked for: a 1,000-item map keeps a poll small.
        "nodes": {node_id: node_view(run, output=outputs) for node_id, run in task.nodes.items()
                  if items or not is_item_run(node_id)},
    }


def event_view(kind: EventKind, stored: EventData) -> Mapping[str, Any]:
    """An event's data as the stream shows it (SPEC §11): a ``task`` event's is the task as
    ``GET /task/{id}`` shows it, a ``node`` event's the node run as the task lists it, with its
    ``node_id``; the rest (and events stored as JSON already) as they are."""
    data = event_data.decode(kind, stored)
    if isinstance(data, NodeRun):
        return {"node_id": data.node_id, **node_view(data)}
    if isinstance(data, Task):
        return task_view(data)
    return data


def saved_cost(task: Task) -> float:
    """What the task's nodes served from the output cache would have cost to run (SPEC §9)."""
    # A cached node's saved_cost, and a map's (what its cached items saved); item runs are in their map's.
    return round(sum(run.saved_cost or 0.0 for run in task.nodes.values() if not is_item_run(run.node_id)), 9)


def task_summary_view(task: TaskSummary, include: frozenset[str]) -> dict[str, Any]:
    """A task as history lists it: the task view's fields in its order, ``data``, ``result`` and
    ``nodes`` only when ``include`` names them, and ``node_counts`` (node runs per status)."""
    view: dict[str, Any] = {"id": task.id}
    if "data" in include:
        view["data"] = task.request.as_data() if task.request is not None else None
    view.update(status=task.status.number, status_name=task.status.value, created=timestamp(task.created),
                finished=timestamp(task.finished))
    if "result" in include:
        view["result"] = task.result
    view.update(execution_time=task.execution_time, execution_cost=task.execution_cost, parent_id=task.parent_id,
                ref_id=f"flow:{task.flow_id};", task_type=TASK_TYPE_FLOW, is_hide=False, public_access_token=None,
                file_result_link=None, flow_id=task.flow_id, revision=task.revision, started=timestamp(task.started),
                error=task.error.as_dict() if task.error else None, mode=task.mode, saved_cost=task.saved_cost)
    if "nodes" in include:
        view["nodes"] = {node_id: node_view(run) for node_id, run in (task.nodes or {}).items()}
    view["node_counts"] = {status.value: count for status, count in task.node_counts.items()}
    return view


def history_view(page: HistoryPage) -> dict[str, Any]:
    """``GET /api/v1/tasks``: ``{"tasks": [...], "next_before": id | null}``."""
    return {"tasks": [task_summary_view(task, page.include) for task in page.tasks], "next_before": page.next_before}


def with_file_links(view: dict[str, Any], link: Callable[[dict[str, Any]], str]) -> dict[str, Any]:
    """``view`` with a signed ``url`` in every file value and ``file_result_link`` filled (SPEC §7).

    Links are made per answer and never stored. ``file_result_link`` is the ``url`` of the first
    file value in ``result``, depth-first in key order. Callers skip this for views whose JSON has
    no ``"$file"`` (:data:`FILE_MARK`): the hot poll path pays one substring search, not a walk.
    """
    linked = _linked(view, link)
    if "file_result_link" in linked:
        first = next((value for value in file_values(linked.get("result")) if "url" in value), None)
        linked["file_result_link"] = first["url"] if first is not None else None
    return linked


FILE_MARK = b'"$file"'
"""How a file value's key looks in JSON: a view without it has no file to link."""


def _linked(value: Any, link: Callable[[dict[str, Any]], str]) -> Any:
    """A copy of ``value`` with ``url`` added to each file value (one whose id is not a string stays as it is)."""
    if isinstance(value, dict):
        if is_file_value(value):
            return {**value, "url": link(value)} if isinstance(value[FILE_KEY], str) else value
        return {key: _linked(item, link) for key, item in value.items()}
    if isinstance(value, list):
        return [_linked(item, link) for item in value]
    return value


HIDDEN = "***"
"""What a webhook trigger's key shows to a key without admin scope: the key is the hook's credential."""


def flow_view(flow: Flow, revision: int, updated: datetime, defaults: dict[str, str | None], *,
              show_trigger_keys: bool = False) -> dict[str, Any]:
    definition = flow.definition()
    if definition.get("triggers") and not show_trigger_keys:
        definition["triggers"] = [{**t, "key": HIDDEN} if "key" in t else t for t in definition["triggers"]]
    return {
        "id": flow.id,
        "name": flow.name,
        "description": flow.description,
        "revision": revision,
        "updated": timestamp(updated),
        "defaults": defaults,
        # Keyed by start node id whichever form the flow uses, so a form can be built per node.
        "inputs": flow.input_schemas or None,
        "namespace": flow.namespace_name,
        "definition": definition,
    }


def secret_view(secret: SecretInfo) -> dict[str, Any]:
    """A secret as listed: its name and which modes have a value, never a value."""
    return {"name": secret.name, "modes": list(secret.modes), "created": timestamp(secret.created),
            "updated": timestamp(secret.updated)}


def key_view(key: ApiKeyRecord) -> dict[str, Any]:
    return {
        "id": key.id,
        "name": key.name,
        "scope": key.scope,
        "created": timestamp(key.created),
        "last_used": timestamp(key.last_used),
        "revoked": key.revoked,
    }
