"""A flow's ``{"$secret": NAME}`` may stand wherever its setting is a string (a header value),
not only in parameters typed to accept it: validated as a string at load and execute, resolved
just before the node runs, and never shown back."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from tests.conftest import Api
from tests.support import FlowBuilder


async def test_a_secret_in_a_string_setting_loads_resolves_and_is_redacted(api: Api, aiohttp_server: Any) -> None:
    seen: list[str] = []

    async def echo(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization", ""))
        return web.json_response({"got": request.headers.get("Authorization", "")})

    app = web.Application()
    app.router.add_get("/whoami", echo)
    server = await aiohttp_server(app)
    value = "Bearer s3cr3t-value-for-the-test"
    response = await api.request("PUT", "/api/v1/secrets/UPSTREAM_TOKEN", json={"value": value})
    assert response.status == 204

    flow = (FlowBuilder("secret-header")
            .node("call", "http_request", url=f"http://127.0.0.1:{server.port}/whoami",
                  headers={"Authorization": {"$secret": "UPSTREAM_TOKEN"}})
            .node("e", "end").edge("call", "e").build())
    await api.put_flow(flow)  # a string-typed setting holding a secret reference is valid
    queued = await api.execute("secret-header", {"start_node_id": "call", "end_node_id": "e"})
    task = await api.wait_for_status(queued["id"], "succeeded")
    assert seen == [value], "the upstream got the real value"
    assert task["result"]["call"]["json"] == {"got": "[secret]"}
    assert value not in str(task)
