"""Execute a flow (or plan it: the dry run), read, list and cancel tasks."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from graph_runtime import errors as flow_errors
from graph_runtime.models import Task, TaskStatus, in_start_order
from http_api import auth, errors, execute_form, planning
from http_api.body import SERVICES, int_query, json_object, path_int
from http_api.schemas import ExecuteBody, parse_body
from http_api.services import Services, check, submit
from http_api.views import FILE_MARK, history_view, task_view, with_file_links
from nodes import codec
from storage import task_history
from storage.secrets import MODES

routes = web.RouteTableDef()

HISTORY_DEFAULT_LIMIT = 50
HISTORY_MAX_LIMIT = 200
# 200 tasks of ~480 KB once made a 197 MB answer; with include, a page stops at this many bytes.
HISTORY_PAGE_BYTES = 4 * 1024 * 1024
"""At most this many bytes of included ``data``/``result``/``nodes`` per history page (one task always)."""


def _services(request: web.Request) -> Services:
    return request.app[SERVICES]  # type: ignore[return-value]


async def _execute(request: web.Request, created_status: int) -> web.Response:
    services = _services(request)
    if not services.accepting:
        raise errors.ShuttingDown()
    flow_id = request.match_info["flow_id"]
    revision = int_query(request, "revision", low=1, high=2**31)
    wait = int_query(request, "wait", low=0, high=60, default=0)
    idempotency_key = request.headers.get("Idempotency-Key") or request.query.get("executionId")
    if idempotency_key is not None and not 1 <= len(idempotency_key) <= 255:
        raise errors.RequestInvalid("Idempotency-Key must be 1 to 255 characters", field="Idempotency-Key")
    raw, printed = await _execute_body(request, services)
    body = _with_query_mode(request, parse_body(ExecuteBody, raw))
    key = request.get(auth.REQUEST_KEY)
    task, created = await submit(
        services, flow_id, body, revision=revision, idempotency_key=idempotency_key,
        raw_body=printed, key_id=key.id if key else None, waits=bool(wait),
    )
    if wait and not task.status.ended:
        task = await _wait_for_end(services, task, wait, announced=created)
    status = created_status if created else 200
    return _answer(services, task_view(task), status=status, headers={"Location": f"/api/v1/task/{task.id}"})


async def _execute_body(request: web.Request, services: Services) -> tuple[dict[str, Any], dict[str, Any]]:
    """The execute body, and what idempotency compares of it: JSON, or a multipart form with files."""
    if execute_form.is_form(request):
        return await execute_form.read_form(request, services.files, max_file_bytes=services.settings.max_file_bytes)
    raw = await json_object(request)
    return raw, raw


def _answer(services: Services, view: dict[str, Any], status: int = 200,
            headers: dict[str, str] | None = None, *, page: bool = False) -> web.Response:
    """A task view (or a history ``page``) as JSON, each file value with a signed ``url`` and
    ``file_result_link`` filled.

    Links are made per answer, never stored. Most tasks hold no file: their JSON is encoded once
    and searched for ``"$file"`` (memchr-fast), not walked.
    """
    data = codec.dumps(view)
    if FILE_MARK in data:
        link = services.links.url_for
        view = ({**view, "tasks": [with_file_links(task, link) for task in view["tasks"]]} if page
                else with_file_links(view, link))
        data = codec.dumps(view)
    return web.Response(body=data, status=status, content_type="application/json", headers=headers)


def _with_query_mode(request: web.Request, body: ExecuteBody) -> ExecuteBody:
    """The body with Ziggy's ``?executionEnvironmentMode=DEV|PROD`` (any case) as its ``mode``; a body
    ``mode`` that says otherwise is a 422 rather than a guess."""
    value = request.query.get("executionEnvironmentMode")
    if not value:
        return body
    mode = value.lower()
    if mode not in MODES:
        raise errors.RequestInvalid("executionEnvironmentMode must be DEV or PROD", field="executionEnvironmentMode")
    if body.mode is not None and body.mode != mode:
        raise errors.RequestInvalid(f"the body's mode {body.mode!r} and executionEnvironmentMode={value} disagree",
                                    field="mode")
    return body.model_copy(update={"mode": mode})


async def _wait_for_end(services: Services, task: Task, seconds: float, *, items: bool = False,
                        announced: bool = False) -> Task:
    """``task`` once it ends, or as it is after ``seconds``: woken by the task's final event,
    whichever process runs it (the events hub); the ended task as this process's executor left
    it, or else read once. ``announced``: this process created it as its watcher."""
    if task.status.ended or seconds <= 0:
        return task
    final = await services.events.wait_ended(task.id, seconds, announced=announced)
    if final is not None and final.task is not None and not items:
        return in_start_order(final.task)
    return await services.repo.get_task(task.id, items=items)


@routes.post("/api/v1/flow/{flow_id}/execute")
async def execute(request: web.Request) -> web.Response:
    """Queue a task for the selected subgraph; 201 with the task and ``Location``."""
    return await _execute(request, 201)


@routes.post("/api/v1/scade/flow/{flow_id}/execute")
async def execute_scade(request: web.Request) -> web.Response:
    """Scade's path: the same, answering 200 because Scade's clients check for exactly 200."""
    return await _execute(request, 200)


@routes.post("/api/v1/flow/{flow_id}/plan")
async def plan_flow(request: web.Request) -> web.Response:
    """The dry run (SPEC §9): run set, parallel levels, cached nodes and cost range of the execute body, or the
    4xx execute would answer; it writes nothing. The body is JSON only (a form's files would be stored)."""
    services = _services(request)
    revision = int_query(request, "revision", low=1, high=2**31)
    body = _with_query_mode(request, parse_body(ExecuteBody, await json_object(request)))
    checked = await check(services, request.match_info["flow_id"], body, revision=revision)
    answer = await planning.dry_run(services, checked)
    return web.Response(body=codec.dumps(answer.as_json()), content_type="application/json")


TASK_INCLUDABLE = frozenset({"outputs", "items"})
"""What ``GET /task/{id}?include=`` adds: every node's output, every map item's run (``map1[3]``)."""


@routes.get("/api/v1/task/{task_id}")
async def get_task(request: web.Request) -> web.Response:
    """The task; ``?wait=N`` (0–60 s) holds the answer until it ends or N seconds pass (a long-poll)."""
    task_id = path_int(request, "task_id", flow_errors.TaskNotFound)
    wait = int_query(request, "wait", low=0, high=60, default=0)
    include = {name.strip() for value in request.query.getall("include", []) for name in value.split(",")} - {""}
    if include - TASK_INCLUDABLE:
        raise errors.RequestInvalid("include can name outputs (each node's output) and items (each map item's run), "
                                    "nothing else", field="include")
    task = await _services(request).repo.get_task(task_id, items="items" in include)
    if wait and not task.status.ended:
        task = await _wait_for_end(_services(request), task, wait, items="items" in include)
    return _answer(_services(request), task_view(task, outputs="outputs" in include, items="items" in include))


@routes.post("/api/v1/task/{task_id}/cancel")
async def cancel_task(request: web.Request) -> web.Response:
    """Cancel a queued or running task (202); an ended task is 409 ``task_ended``."""
    services = _services(request)
    task_id = path_int(request, "task_id", flow_errors.TaskNotFound)
    task = await services.repo.request_cancel(task_id)
    if task.status is TaskStatus.RUNNING:
        if services.scheduler.cancel(task_id):
            task = await _wait_for_end(services, task, 5)
    else:  # ended here, before any worker took it (queued, or waiting for a pool): its final event
        await services.events.ended_elsewhere(task)
    return _answer(services, task_view(task), status=202)


@routes.get("/api/v1/tasks")
async def list_tasks(request: web.Request) -> web.Response:
    """History, newest first: ``{"tasks": [summaries], "next_before": id | null}``.

    Summaries leave out ``data``, ``result`` and ``nodes`` (``node_counts`` instead); ``?include=``
    brings them back, and then a page holds at most :data:`HISTORY_PAGE_BYTES` of them.
    """
    limit = int_query(request, "limit", low=1, high=HISTORY_MAX_LIMIT, default=HISTORY_DEFAULT_LIMIT)
    before = int_query(request, "before", low=1, high=2**62)
    include = _parse_include(request)
    mode = request.query.get("mode") or None
    if mode is not None and mode not in MODES:
        raise errors.RequestInvalid(f"mode must be one of {', '.join(MODES)}", field="mode")
    status_value = request.query.get("status")
    status = None
    if status_value:
        status = _parse_status(status_value)
    parent_id = int_query(request, "parent_id", low=1, high=2**62)
    page = await _services(request).repo.task_history(
        flow_id=request.query.get("flow_id") or None, status=status, limit=limit or HISTORY_DEFAULT_LIMIT,
        before=before, include=include, budget_bytes=HISTORY_PAGE_BYTES, mode=mode, parent_id=parent_id,
    )
    return _answer(_services(request), history_view(page), page=True)


def _parse_include(request: web.Request) -> frozenset[str]:
    """``include=data,result`` (comma-separated, or repeated); unknown names are a 422."""
    names = {name.strip() for value in request.query.getall("include", []) for name in value.split(",")} - {""}
    if unknown := names - set(task_history.INCLUDABLE):
        raise errors.RequestInvalid(f"include can name {', '.join(task_history.INCLUDABLE)}, "
                                    f"not {', '.join(sorted(unknown))}", field="include")
    return frozenset(names)


def _parse_status(value: str) -> TaskStatus:
    try:
        return TaskStatus.from_number(int(value)) if value.isdigit() else TaskStatus(value)
    except (KeyError, ValueError):
        names = ", ".join(f"{s.number}/{s.value}" for s in TaskStatus)
        raise errors.RequestInvalid(f"status must be one of {names}", field="status") from None
