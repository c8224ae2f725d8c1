"""Webhook triggers (SPEC §11): ``POST /api/v1/hooks/{flow_id}/{key}`` starts a task.

A flow declares ``triggers: [{type: webhook, key}]``. The key is the credential (no server key is
needed), so a wrong key, a flow without that hook and an unknown flow are the same 404, every key
is compared in constant time, and neither the key nor a credential header is stored or logged
(``access_log``/``redaction`` mask hook paths). The start node's ``data`` is
``{"body", "headers", "query"}``; the task's ``trigger`` says which trigger started it. Kestra's
webhook path (``compat_kestra``) starts tasks through :func:`start_hook`. ``GET /api/v1/triggers``
lives in ``triggers``.
"""

from __future__ import annotations

import hmac
import logging
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from graph_runtime import errors as flow_errors
from graph_runtime.flow import Flow, WebhookTrigger
from graph_runtime.models import Task, TaskTrigger
from http_api import errors, triggers
from http_api.auth import public
from http_api.body import JSON_TYPES, MAX_JSON_DEPTH, SERVICES, json_response, read_body, too_deep
from http_api.schemas import ExecuteBody
from http_api.services import Services, submit
from nodes import codec

log = logging.getLogger(__name__)
routes = web.RouteTableDef()

# Credentials a sender may attach (a proxy's, a browser's): a task's data is readable by every execute key.
CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "execution-key", "x-api-key"})
CREDENTIAL_QUERY = frozenset({"execution-key"})
# Standard Webhooks senders retry a delivery with the same webhook-id: it starts one task, not two.
DELIVERY_ID_HEADERS = ("Idempotency-Key", "webhook-id")
FORM = "application/x-www-form-urlencoded"


class HookNotFound(flow_errors.NotFound):
    """No such webhook: check the flow id and the key in the hook's URL."""

    code = "hook_not_found"


def _services(request: web.Request) -> Services:
    return request.app[SERVICES]  # type: ignore[return-value]


def matching_trigger(flow: Flow, key: str) -> int:
    """The index in ``flow.triggers`` of the webhook trigger whose key is ``key``.

    Every webhook key of the flow is compared, each in constant time, so timing tells nothing.
    """
    found = None
    given = key.encode()
    for index, trigger in enumerate(flow.triggers or ()):
        if isinstance(trigger, WebhookTrigger) and hmac.compare_digest(trigger.key.encode(), given):
            found = index
    if found is None:
        raise HookNotFound()
    return found


async def hook_flow(services: Services, flow_id: str, key: str) -> tuple[Flow, int, int]:
    """The flow, its revision and the index of the trigger ``key`` opens; an unknown flow is the same 404."""
    try:
        flow, revision, _ = await services.repo.get_flow(flow_id)
    except flow_errors.NotFound:
        raise HookNotFound() from None
    return flow, revision, matching_trigger(flow, key)


async def hook_payload(request: web.Request) -> dict[str, Any]:
    """``{"body", "headers", "query"}``: the body as JSON, a form as an object, text as a string, or
    null; header names lower-cased, credentials left out; a repeated query name gives a list."""
    raw = await read_body(request)
    headers: dict[str, str] = {}
    for name, value in request.headers.items():
        lowered = name.lower()
        if lowered not in CREDENTIAL_HEADERS:
            headers[lowered] = f"{headers[lowered]}, {value}" if lowered in headers else value
    return {"body": _body(request, raw), "headers": headers, "query": _multi(request.query.items(), CREDENTIAL_QUERY)}


def _body(request: web.Request, raw: bytes) -> Any:
    if not raw.strip():
        return None
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        raise errors.UnsupportedMediaType("a webhook body must be UTF-8 text (JSON, a form or plain text); "
                                          "upload a file with POST /api/v1/files instead") from None
    ctype = request.content_type
    if ctype == FORM:
        return _multi(parse_qsl(text, keep_blank_values=True), frozenset())
    if ctype in JSON_TYPES or ctype.endswith("+json"):
        try:
            value = codec.loads(raw)
        except codec.DecodeError:
            if ctype == "application/json" or ctype.endswith("+json"):
                raise errors.BodyNotJson("the webhook body is not valid JSON; send it as text/plain to get it as "
                                         "a string") from None
            return text
        if too_deep(value):
            raise errors.RequestInvalid(f"the body nests deeper than {MAX_JSON_DEPTH} levels")
        return value
    return text


def _multi(pairs: Any, leave_out: frozenset[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in pairs:
        if name.lower() in leave_out:
            continue
        if name in out:
            out[name] = [*out[name], value] if isinstance(out[name], list) else [out[name], value]
        else:
            out[name] = value
    return out


async def start_hook(request: web.Request, flow: Flow, revision: int, index: int) -> tuple[Task, bool]:
    """Start a task of ``flow`` with the request as its start node's data; replays of a delivery
    (``Idempotency-Key`` or Standard Webhooks' ``webhook-id``) return the task they started."""
    services = _services(request)
    if not services.accepting:
        raise errors.ShuttingDown()
    payload = await hook_payload(request)
    trigger = TaskTrigger("webhook", index)
    body = ExecuteBody(node_settings={triggers.start_node(flow): {"data": payload}})
    delivery = next((request.headers[name] for name in DELIVERY_ID_HEADERS if request.headers.get(name)), None)
    if delivery is not None and len(delivery) > 255:
        raise errors.RequestInvalid("a delivery id must be at most 255 characters", field="webhook-id")
    task, created = await submit(services, flow.id, body, revision=revision, idempotency_key=delivery,
                                 raw_body={"body": payload["body"], "query": payload["query"],
                                           "trigger": trigger.as_dict()}, trigger=trigger)
    if created:
        log.info("task started by a webhook", extra={"action": "hook_fired", "task_id": task.id, "flow_id": flow.id})
    return task, created


@routes.post("/api/v1/hooks/{flow_id}/{key}")
@public
async def fire_hook(request: web.Request) -> web.Response:
    """Start a task from a webhook: 201 ``{id, flow_id, status, status_name}`` (200 for a replayed delivery)."""
    flow, revision, index = await hook_flow(_services(request), request.match_info["flow_id"], request.match_info["key"])
    task, created = await start_hook(request, flow, revision, index)
    return json_response({"id": task.id, "flow_id": task.flow_id, "status": task.status.number,
                          "status_name": task.status.value}, status=201 if created else 200)
