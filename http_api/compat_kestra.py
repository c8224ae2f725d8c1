"""Kestra's executions API (SPEC §11), enough for Kestra's own Python clients (``kestra``, ``kestrapy``).

Every path exists with and without a ``/{tenant}`` segment after ``/api/v1``; this server has one
tenant, so the tenant is accepted and ignored. An execution's id is the task's id as a string.

- ``POST …/executions/{namespace}/{flow_id}`` (``?wait=true``, ``?revision=N``, ``?labels=k:v``…):
  inputs as ``multipart/form-data``, merged over the start node's ``data``. A part with a filename
  is a file input, stored as a file value: named by the part (``kestrapy``), or by its filename when
  the part is named ``files`` (``kestra``'s ``Flow().execute``). A text part is a string unless the
  flow's ``inputs`` schema types that input otherwise (then it is read as JSON: ``5``, ``true``…).
  ``wait=true`` holds the answer until the task ends, at most :data:`WAIT_S` seconds.
- ``GET …/executions/{id}``: the execution with ``state: {current, histories}`` (CREATED, RUNNING,
  SUCCESS, FAILED, KILLED), ``outputs`` (the task's result) and a ``taskRunList`` (one per node).
- ``GET …/logs/{id}/download``: plain-text log lines. Until the task events stream exists they are
  made from the task's and its node runs' status changes and timestamps.
- ``GET|POST …/executions/webhook/{namespace}/{flow_id}/{key}``: a webhook trigger of the flow
  (``routes_hooks``), no server key needed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

import aiohttp
from aiohttp import BodyPartReader, web
from aiohttp.web_protocol import RequestPayloadError

from graph_runtime import errors as flow_errors
from graph_runtime import selection
from graph_runtime.flow import DEFAULT_NAMESPACE, Flow
from graph_runtime.models import NodeRun, NodeStatus, Task, TaskStatus, in_start_order
from http_api import auth, errors, routes_hooks, routes_tasks
from http_api import body as bodies
from http_api.auth import public
from http_api.body import SERVICES, int_query, json_response, path_int
from http_api.routes_files import FileTooLarge
from http_api.schemas import ExecuteBody
from http_api.services import Services, submit
from http_api.views import timestamp, timestamp_text, with_file_links
from nodes import codec
from nodes import errors as node_errors

routes = web.RouteTableDef()

WAIT_S = 60  # ?wait=true: as long as our own ?wait may hold an answer
MAX_PARTS = 64
CHUNK_BYTES = 256 * 1024
TASK_STATES = {TaskStatus.QUEUED: "CREATED", TaskStatus.RUNNING: "RUNNING", TaskStatus.SUCCEEDED: "SUCCESS",
               TaskStatus.FAILED: "FAILED", TaskStatus.CANCELLED: "KILLED"}
NODE_STATES = {NodeStatus.PENDING: "CREATED", NodeStatus.RUNNING: "RUNNING", NodeStatus.SUCCEEDED: "SUCCESS",
               NodeStatus.FAILED: "FAILED", NodeStatus.SKIPPED: "SKIPPED", NodeStatus.CANCELLED: "KILLED"}
PREFIXES = ("/api/v1", "/api/v1/{tenant}")


def _services(request: web.Request) -> Services:
    return request.app[SERVICES]  # type: ignore[return-value]


async def _flow_in(services: Services, namespace: str, flow_id: str, revision: int | None = None) -> tuple[Flow, int]:
    flow, rev, _ = await services.repo.get_flow(flow_id, revision)
    if flow.namespace_name != namespace:
        raise flow_errors.FlowNotFound(f"no flow {flow_id!r} in namespace {namespace!r} "
                                       f"(flow {flow_id!r} is in {flow.namespace_name!r})")
    return flow, rev


async def create_execution(request: web.Request) -> web.Response:
    """Queue a task of the flow with the form's inputs; 200 with the execution (Kestra's status)."""
    services = _services(request)
    if not services.accepting:
        raise errors.ShuttingDown()
    revision = int_query(request, "revision", low=1, high=2**31)
    wait = _flag(request, "wait")
    labels = _labels(request)
    flow, rev = await _flow_in(services, request.match_info["namespace"], request.match_info["flow_id"], revision)
    start_id = selection.resolve_ids(flow, None, None, None)[0]
    inputs = await _inputs(request, services, flow.input_schemas.get(start_id) or {})
    body = ExecuteBody(node_settings={start_id: {"data": inputs}} if inputs else {},
                       init_context={"labels": labels} if labels else {})
    key = request.get(auth.REQUEST_KEY)
    task, _ = await submit(services, flow.id, body, revision=rev, key_id=key.id if key else None)
    if wait and not task.status.ended:
        task = await routes_tasks._wait_for_end(services, task, WAIT_S)
    return _answer(services, execution_view(in_start_order(task), flow.namespace_name))


def _flag(request: web.Request, name: str) -> bool:
    value = request.query.get(name, "false").lower()
    if value not in ("true", "false", ""):
        raise errors.RequestInvalid(f"{name} must be true or false", field=name)
    return value == "true"


def _labels(request: web.Request) -> list[dict[str, str]]:
    """``?labels=key:value`` (repeated) as Kestra's ``[{key, value}]``."""
    labels = []
    for text in request.query.getall("labels", ()):
        key, sep, value = text.partition(":")
        if not sep or not key or not value:
            raise errors.RequestInvalid(f"a label is key:value, got {text[:100]!r}", field="labels")
        labels.append({"key": key, "value": value})
    return labels


async def _inputs(request: web.Request, services: Services, schema: dict[str, Any]) -> dict[str, Any]:
    """The form's inputs by name: file parts stored as file values, text parts typed by ``schema``."""
    if not request.body_exists:
        return {}
    if request.content_type == routes_hooks.FORM:  # `curl -d greeting=hi`: text inputs only
        raw = await bodies.read_body(request)
        try:
            pairs = parse_qsl(raw.decode(), keep_blank_values=True, max_num_fields=MAX_PARTS)
        except (UnicodeDecodeError, ValueError):
            raise errors.RequestInvalid(f"send at most {MAX_PARTS} inputs as UTF-8 form fields") from None
        return {name: _typed(value, (schema.get("properties") or {}).get(name) or {}) for name, value in pairs}
    if request.content_type != "multipart/form-data":
        raise errors.UnsupportedMediaType("send Kestra inputs as multipart/form-data (one part per input; a file "
                                          "as a part with a filename)")
    inputs: dict[str, Any] = {}
    try:
        reader = await request.multipart()
        while (part := await _next_part(reader, services.settings.body_timeout_s)) is not None:
            if len(inputs) >= MAX_PARTS:
                raise errors.RequestInvalid(f"at most {MAX_PARTS} inputs per execution", field=part.name)
            name, value = await _input(request, services, part, schema)
            inputs[name] = value
    except (TimeoutError, ConnectionResetError, aiohttp.http_exceptions.HttpProcessingError,
            RequestPayloadError, ValueError) as exc:  # aiohttp's multipart reader raises ValueError on bad framing
        raise bodies.unreadable(request, exc) from None
    return inputs


async def _next_part(reader: aiohttp.MultipartReader, timeout_s: float) -> BodyPartReader | None:
    async with asyncio.timeout(timeout_s):
        part = await reader.next()
    if part is not None and not isinstance(part, BodyPartReader):
        raise errors.RequestInvalid("nested multipart parts are not accepted")
    return part


async def _input(request: web.Request, services: Services, part: BodyPartReader,
                 schema: dict[str, Any]) -> tuple[str, Any]:
    chunks = bodies.streamed(request, _chunks(part))
    if part.filename is not None:  # a FILE input
        name = part.filename if part.name == "files" else part.name or part.filename
        content_type = part.headers.get(aiohttp.hdrs.CONTENT_TYPE) or "application/octet-stream"
        limit = services.settings.max_file_bytes
        try:
            stored = await services.files.put(chunks, name=part.filename[:255] or name, content_type=content_type,
                                              max_bytes=limit)
        except node_errors.OutputTooLarge:
            raise FileTooLarge(f"input {name!r} is larger than the server accepts ({limit} bytes; see "
                               "GRAPH_RUNTIME_MAX_FILE_BYTES); nothing was kept", field=name) from None
        return name, stored.as_value()
    name = part.name or ""
    if not name:
        raise errors.RequestInvalid("every form part needs a name: the input it gives")
    data = bytearray()
    async for chunk in chunks:
        data += chunk
        if len(data) > services.settings.max_body_bytes:
            raise errors.BodyTooLarge(f"input {name!r} is larger than the server accepts "
                                      f"({services.settings.max_body_bytes} bytes)", field=name)
    try:
        text = data.decode()
    except UnicodeDecodeError:
        raise errors.RequestInvalid(f"input {name!r} is not UTF-8 text; send a file as a part with a filename",
                                    field=name) from None
    return name, _typed(text, (schema.get("properties") or {}).get(name) or {})


def _typed(text: str, schema: dict[str, Any]) -> Any:
    """A text input as its schema types it: a string unless the schema says another type (then JSON)."""
    declared = schema.get("type")
    types = declared if isinstance(declared, list) else [declared] if declared else []
    if not types or "string" in types:
        return text
    try:
        return codec.loads(text)
    except codec.DecodeError:
        return text  # the schema check at execute names the input and what it should be


async def _chunks(part: BodyPartReader) -> AsyncIterator[bytes]:
    while chunk := await part.read_chunk(CHUNK_BYTES):
        yield chunk


async def _task(request: web.Request) -> tuple[Task, str]:
    """The execution's task and its flow's namespace."""
    services = _services(request)
    task = in_start_order(await services.repo.get_task(path_int(request, "execution_id", flow_errors.TaskNotFound)))
    try:
        flow, _, _ = await services.repo.get_flow(task.flow_id, task.revision)
        namespace = flow.namespace_name
    except flow_errors.NotFound:  # deleted since: its tasks stay readable
        namespace = DEFAULT_NAMESPACE
    return task, namespace


async def get_execution(request: web.Request) -> web.Response:
    task, namespace = await _task(request)
    return _answer(_services(request), execution_view(task, namespace))


def _answer(services: Services, view: dict[str, Any]) -> web.Response:
    """The execution as JSON, each file value in its inputs and outputs with a signed ``url`` (as every answer)."""
    return json_response(with_file_links(view, services.links.url_for))


def execution_view(task: Task, namespace: str) -> dict[str, Any]:
    """A task as Kestra's ``Execution`` (with the fields ``kestrapy``'s model requires)."""
    execution_id = str(task.id)
    start = task.request.node_settings.get(task.request.start_node_id)
    inputs = start.get("data") if isinstance(start, dict) else None
    context = task.request.init_context
    trigger = task.request.trigger.as_dict() if task.request.trigger is not None else None
    return {
        "id": execution_id,
        "namespace": namespace,
        "flowId": task.flow_id,
        "flowRevision": task.revision,
        "inputs": inputs if isinstance(inputs, dict) else {},
        "labels": context.get("labels") or [],
        "state": _state(TASK_STATES[task.status], task.created, task.started, task.finished, task.status.ended),
        "outputs": task.result,
        "taskRunList": [_task_run(task, namespace, run) for run in task.nodes.values()],
        "parentId": str(task.parent_id) if task.parent_id is not None else None,  # a subflow's or map's parent
        "originalId": execution_id,
        "deleted": False,
        "metadata": {"attemptNumber": max(task.claims, 1), "originalCreatedDate": timestamp(task.created)},
        "trigger": {"id": f"{trigger.get('type')}-{trigger.get('index')}", "type": trigger.get("type")}
        if isinstance(trigger, dict) else None,
        "error": task.error.as_dict() if task.error else None,
    }


def _task_run(task: Task, namespace: str, run: NodeRun) -> dict[str, Any]:
    ended = run.status not in (NodeStatus.PENDING, NodeStatus.RUNNING)
    return {"id": f"{task.id}.{run.node_id}", "executionId": str(task.id), "namespace": namespace,
            "flowId": task.flow_id, "taskId": run.node_id,
            "state": _state(NODE_STATES[run.status], run.started or task.created, run.started, run.finished, ended)}


def _state(current: str, created: datetime | None, started: datetime | None, finished: datetime | None,
           ended: bool) -> dict[str, Any]:
    """Kestra's ``State``: the current state, its history, and the duration so far (ISO 8601)."""
    begun = created or datetime.now(UTC)
    histories = [{"state": "CREATED", "date": timestamp(begun)}]
    if started is not None:
        histories.append({"state": "RUNNING", "date": timestamp(started)})
    if ended and current != histories[-1]["state"]:
        histories.append({"state": current, "date": timestamp(finished or started or begun)})
    last = finished if ended and finished is not None else datetime.now(UTC)
    duration = f"PT{max((last - begun).total_seconds(), 0.0):.6f}S"
    return {"current": current, "histories": histories, "duration": duration,
            "startDate": timestamp(begun), "endDate": timestamp(finished) if ended else None,
            # kestrapy's State model requires these (its generator kept the getters of Kestra's class).
            "getDuration": duration, "getStartDate": timestamp(begun), "getEndDate": timestamp(last)}


async def download_logs(request: web.Request) -> web.Response:
    """The execution's log as text: the task's and its nodes' status changes, in time order."""
    task, namespace = await _task(request)
    return web.Response(text="".join(f"{line}\n" for line in log_lines(task, namespace)), content_type="text/plain",
                        headers={"Content-Disposition": f'attachment; filename="{task.id}.log"'})


def log_lines(task: Task, namespace: str) -> list[str]:
    """Kestra-style lines (``<time> <LEVEL> [<node>] <message>``) from the recorded status changes."""
    events: list[tuple[datetime, str, str]] = []
    if task.created is not None:
        events.append((task.created, "INFO", f"execution {task.id} of {namespace}.{task.flow_id} created"))
    if task.started is not None:
        events.append((task.started, "INFO", "execution running"))
    for run in task.nodes.values():
        if run.started is not None:
            events.append((run.started, "INFO", f"[{run.node_id}] running"))
        if run.finished is not None:
            level = "ERROR" if run.status is NodeStatus.FAILED else "INFO"
            detail = f": {run.error.code}: {run.error.message}" if run.error else ""
            events.append((run.finished, level, f"[{run.node_id}] {run.status.value}{detail}"))
    if task.status.ended and task.finished is not None:
        level = "INFO" if task.status is TaskStatus.SUCCEEDED else "ERROR"
        events.append((task.finished, level, f"execution {TASK_STATES[task.status]}"))
    events.sort(key=lambda event: event[0])
    return [f"{timestamp_text(when)} {level} {message}" for when, level, message in events]


@public
async def fire_webhook(request: web.Request) -> web.Response:
    """Kestra's webhook path: the flow's webhook trigger with this key, Kestra's answer."""
    services = _services(request)
    namespace, flow_id, key = (request.match_info[name] for name in ("namespace", "flow_id", "key"))
    flow, revision, index = await routes_hooks.hook_flow(services, flow_id, key)
    if flow.namespace_name != namespace:
        raise routes_hooks.HookNotFound()
    task, _ = await routes_hooks.start_hook(request, flow, revision, index)
    view = execution_view(task, namespace)
    return json_response({key: view[key] for key in ("id", "namespace", "flowId", "flowRevision", "labels", "state",
                                                     "trigger")})


for _prefix in PREFIXES:
    routes.post(f"{_prefix}/executions/webhook/{{namespace}}/{{flow_id}}/{{key}}")(fire_webhook)
    routes.get(f"{_prefix}/executions/webhook/{{namespace}}/{{flow_id}}/{{key}}")(fire_webhook)  # kestrapy's
    routes.post(f"{_prefix}/executions/{{namespace}}/{{flow_id}}")(create_execution)
    routes.get(f"{_prefix}/executions/{{execution_id}}")(get_execution)
    routes.get(f"{_prefix}/logs/{{execution_id}}/download")(download_logs)
