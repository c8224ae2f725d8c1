"""Callbacks (SPEC §11): a task's delivery attempts, and the signing secret, shown once per rotation."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from graph_runtime import errors as flow_errors
from http_api.auth import requires
from http_api.body import SERVICES, json_response, path_int
from http_api.services import Services
from http_api.views import timestamp
from storage.callbacks import DELIVERED, GIVEN_UP, Delivery

routes = web.RouteTableDef()


@routes.get("/api/v1/task/{task_id}/callbacks")
async def list_callbacks(request: web.Request) -> web.Response:
    """``{"callbacks": [...]}``: each URL the task's end is posted to, its state and every attempt."""
    services: Services = request.app[SERVICES]  # type: ignore[assignment]
    task_id = path_int(request, "task_id", flow_errors.TaskNotFound)
    await services.repo.get_task(task_id)  # an unknown task is a 404, not an empty list
    deliveries = await services.callbacks.store.deliveries(task_id)
    return json_response({"callbacks": [delivery_view(d) for d in deliveries]})


@routes.post("/api/v1/webhook-secret")
@requires("admin")
async def reveal_webhook_secret(request: web.Request) -> web.Response:
    """The ``whsec_`` signing secret: the current one if it was never shown, else a new one (rotated)."""
    services: Services = request.app[SERVICES]  # type: ignore[assignment]
    secret = await services.callbacks.store.reveal_secret(services.cipher)
    return json_response({"secret": secret})


def delivery_view(delivery: Delivery) -> dict[str, Any]:
    return {
        "url": delivery.url,
        "webhook_id": delivery.webhook_id,
        "state": delivery.state,
        "delivered": delivery.state == DELIVERED,
        "given_up": delivery.state == GIVEN_UP,
        "next_attempt": timestamp(delivery.next_at) if delivery.state not in (DELIVERED, GIVEN_UP) else None,
        "retry_until": timestamp(delivery.deadline),
        "attempts": [{"attempt": a.number, "at": timestamp(a.at), "duration_s": round(a.duration_s, 6),
                      "status_code": a.status_code, "error": a.error} for a in delivery.attempts],
    }
