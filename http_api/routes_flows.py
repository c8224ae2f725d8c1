"""Flows, node types and the health check."""

from __future__ import annotations

from aiohttp import web

from graph_runtime import flow as flow_model
from graph_runtime import selection, validation
from graph_runtime.flow import Flow
from http_api.auth import REQUEST_KEY, public, requires
from http_api.body import SERVICES, int_query, json_or_yaml_object, json_response
from http_api.services import Services
from http_api.views import flow_view

routes = web.RouteTableDef()


def _services(request: web.Request) -> Services:
    return request.app[SERVICES]  # type: ignore[return-value]


def run_defaults(flow: Flow) -> dict[str, str | None]:
    """The S/E/R a request that names none would get (null where the request must name one)."""
    return selection.default_ids(flow)


@routes.get("/api/v1/flows")
async def list_flows(request: web.Request) -> web.Response:
    flows = await _services(request).repo.list_flows()
    return json_response({"flows": [
        {"id": f.id, "name": f.name, "description": f.description, "revision": rev, "defaults": run_defaults(f)}
        for f, rev, _ in flows
    ]})


@routes.get("/api/v1/flows/{flow_id}")
async def get_flow(request: web.Request) -> web.Response:
    revision = int_query(request, "revision", low=1, high=2**31)
    flow, rev, updated = await _services(request).repo.get_flow(request.match_info["flow_id"], revision)
    key = request.get(REQUEST_KEY)
    admin = key is not None and key.scope == "admin"  # a webhook trigger's key is its credential
    return json_response(flow_view(flow, rev, updated, run_defaults(flow), show_trigger_keys=admin))


@routes.put("/api/v1/flows/{flow_id}")
@requires("admin")
async def put_flow(request: web.Request) -> web.Response:
    """Create a flow or add a revision; 201 when a revision was added, 200 when unchanged.

    The body is JSON, or YAML (``Content-Type: application/yaml``) read as a flow file is.
    """
    services = _services(request)
    data = await json_or_yaml_object(request)
    flow = flow_model.parse(data, flow_id=request.match_info["flow_id"])
    validation.validate(flow, services.registry)
    revision, created = await services.repo.save_flow(flow)
    _, _, updated = await services.repo.get_flow(flow.id, revision)
    view = flow_view(flow, revision, updated, run_defaults(flow), show_trigger_keys=True)  # admin only
    return json_response(view, status=201 if created else 200)


@routes.delete("/api/v1/flows/{flow_id}")
@requires("admin")
async def delete_flow(request: web.Request) -> web.Response:
    await _services(request).repo.delete_flow(request.match_info["flow_id"])
    return web.Response(status=204)


@routes.get("/api/v1/node-types")
async def node_types(request: web.Request) -> web.Response:
    registry = _services(request).registry
    return json_response({"node_types": [
        {
            "type": t.type,
            "description": t.description,
            "params_schema": t.Params.model_json_schema(),
            "output_schema": t.Output.model_json_schema(),
            "cost": t.cost.model_dump(),
            "policy": t.policy.model_dump(),
            "extra": t.extra,
            "available": t.available(),
            "pool": t.pool,
        }
        for t in registry
    ]})


@routes.get("/healthz")
@public
async def healthz(request: web.Request) -> web.Response:
    services = _services(request)
    await services.repo.ping()
    return json_response({"status": "ok", "running_tasks": services.scheduler.running_count})
