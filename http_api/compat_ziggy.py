"""Ziggy's API (SPEC §11): launch a flow with ``POST /api?flowUuid=…`` and read how it ended.

- ``POST /api?flowUuid=<flow id>&execution-key=<key>&executionEnvironmentMode=DEV|PROD&executionId=<id>``:
  the JSON body is the start node's ``data``. ``executionId`` is the idempotency key (a UUID is made
  when it is left out, and answered); ``executionEnvironmentMode`` defaults to DEV, as in Ziggy.
  Answers 201 ``{executionId, flowUuid, taskId}`` (200 for a repeated ``executionId``).
- ``GET /api/ziggy/execution-status/<executionId>``: ``{executionId, terminationStatus, ms,
  executionEnvironmentMode, createdAt, flowUuid, flowName}`` once the task ended; 404
  ``execution_not_finished`` while it is queued or running (Ziggy lists an execution once it ends),
  404 ``execution_not_found`` for an id no task has.
"""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp import web

from graph_runtime import errors as flow_errors
from graph_runtime import selection
from graph_runtime.models import Task, TaskStatus
from http_api import auth, errors
from http_api.body import SERVICES, json_object, json_response
from http_api.schemas import ExecuteBody
from http_api.services import Services, submit
from http_api.views import timestamp
from storage import task_lookup
from storage.secrets import MODES

routes = web.RouteTableDef()

DEFAULT_MODE = "DEV"  # Ziggy's default when executionEnvironmentMode is left out
TIMEOUT_CODES = frozenset({"task_timeout", "node_timeout"})


class ExecutionNotFound(flow_errors.NotFound):
    """No execution has this executionId."""

    code = "execution_not_found"


class ExecutionNotFinished(flow_errors.NotFound):
    """The execution is queued or running; ask again once it has ended."""

    code = "execution_not_finished"


def _services(request: web.Request) -> Services:
    return request.app[SERVICES]  # type: ignore[return-value]


def _mode(request: web.Request) -> str:
    value = request.query.get("executionEnvironmentMode") or DEFAULT_MODE
    if value.lower() not in MODES:
        raise errors.RequestInvalid("executionEnvironmentMode must be DEV or PROD", field="executionEnvironmentMode")
    return value.lower()


@routes.post("/api")
async def launch(request: web.Request) -> web.Response:
    """Queue a task of flow ``flowUuid`` with the body as its start node's data."""
    services = _services(request)
    if not services.accepting:
        raise errors.ShuttingDown()
    flow_id = request.query.get("flowUuid")
    if not flow_id:
        raise errors.RequestInvalid("give the flow's id as ?flowUuid=<flow id>", field="flowUuid")
    execution_id = request.query.get("executionId") or str(uuid.uuid4())
    if len(execution_id) > 255:
        raise errors.RequestInvalid("executionId must be at most 255 characters", field="executionId")
    mode = _mode(request)
    data = await json_object(request)
    flow, _, _ = await services.repo.get_flow(flow_id)
    start_id = selection.resolve_ids(flow, None, None, None)[0]
    body = ExecuteBody(node_settings={start_id: {"data": data}}, mode=mode)  # type: ignore[arg-type]
    key = request.get(auth.REQUEST_KEY)
    task, created = await submit(services, flow_id, body, idempotency_key=execution_id,
                                 raw_body={"ziggy": data}, key_id=key.id if key else None)
    return json_response({"executionId": execution_id, "flowUuid": flow_id, "taskId": task.id},
                         status=201 if created else 200, headers={"Location": f"/api/ziggy/execution-status/{execution_id}"})


def termination_status(task: Task) -> str:
    """Ziggy's ``terminationStatus`` of an ended task."""
    if task.status is TaskStatus.SUCCEEDED:
        return "SUCCESS"
    if task.status is TaskStatus.CANCELLED:
        return "KILLED"
    return "TIMED OUT" if task.error is not None and task.error.code in TIMEOUT_CODES else "FATAL"


@routes.get("/api/ziggy/execution-status/{execution_id}")
async def execution_status(request: web.Request) -> web.Response:
    """How the execution ended, in Ziggy's fields; 404 while it is queued or running."""
    services = _services(request)
    execution_id = request.match_info["execution_id"]
    task_id = await task_lookup.task_id_by_idempotency_key(services.repo, execution_id)
    if task_id is None:
        raise ExecutionNotFound(f"no execution has the executionId {execution_id!r}")
    task = await services.repo.get_task(task_id)
    if not task.status.ended:
        raise ExecutionNotFinished(f"execution {execution_id!r} is {task.status.value}; ask again once it has ended "
                                   f"(or poll GET /api/v1/task/{task.id})")
    return json_response(await status_view(services, task, execution_id))


async def status_view(services: Services, task: Task, execution_id: str) -> dict[str, Any]:
    try:
        flow, _, _ = await services.repo.get_flow(task.flow_id, task.revision)
        flow_name = flow.name or flow.id
    except flow_errors.NotFound:  # deleted since: its tasks stay readable
        flow_name = task.flow_id
    return {
        "executionId": execution_id,
        "terminationStatus": termination_status(task),
        "ms": round((task.execution_time or 0.0) * 1000),
        "executionEnvironmentMode": task.request.mode.upper(),
        "createdAt": timestamp(task.created),
        "flowUuid": task.flow_id,
        "flowName": flow_name,
        # Ours beside Ziggy's: the task, its result (Ziggy's Terminator data) and its error.
        "taskId": task.id,
        "data": task.result,
        "error": task.error.as_dict() if task.error else None,
    }
