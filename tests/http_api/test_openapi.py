"""The OpenAPI document: it lists every route, real answers fit its models, and schemathesis finds nothing.

The schemathesis run is the CLI (``python -m schemathesis.cli run``) in a child process against a
real server on a port (the production factory, a real SQLite file), served by this test's event
loop while it awaits the child: schemathesis' blocking client never shares the loop it tests.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import importlib.util
import json
import logging
import re
import shutil
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pydantic
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage

from graph_runtime.flow import Flow
from http_api import auth, openapi, routes_openapi, schemas, wire
from http_api.app import create_app
from http_api.body import SERVICES
from http_api.settings import Settings
from tests.conftest import SAMPLE_FLOWS
from tests.processes import process_env
from tests.support import FlowBuilder, eventually, registry_with_test_types

# Every check that judges the server against the document (not the heuristics about what a
# "reasonable" API should accept: those are opinions, not the contract). negative_data_rejection
# is one: a request the document forbids must not succeed. positive_data_acceptance is not: the
# document cannot say that a flow must be acyclic or that a PUT body's id must be the path's.
CHECKS = ("not_a_server_error", "status_code_conformance", "content_type_conformance",
          "response_schema_conformance", "response_headers_conformance", "ignored_auth", "negative_data_rejection")
# Per operation when fuzzing: 25 took 98 s of a 13-minute suite on a slow day; at 8 no GET /files/{id} got a 2xx.
MAX_EXAMPLES = 12
# ~36 operations since the triggers and the Ziggy/Kestra paths (and PUT /flows' schema grew with them):
# ~3,900 requests; 103 s, then over 170 s, measured on a shared 2-core box while other suites ran.
ST_TIMEOUT_S = 300.0
# Flows the server would run for schemathesis: the samples, minus the one that calls the internet.
OFFLINE_SAMPLES = [p for p in SAMPLE_FLOWS.iterdir() if p.suffix in (".yaml", ".yml", ".json") and p.stem != "http-fetch"]
SLEEPY = FlowBuilder("sleepy").node("s", "start").node("nap", "test.sleep", seconds=30).node("e", "end") \
    .edge("s", "nap").edge("nap", "e").build()
FAILING = FlowBuilder("failing").node("s", "start").node("boom", "test.fail").node("e", "end") \
    .edge("s", "boom").edge("boom", "e").build()


# Readings no generated request can make succeed: a webhook needs its flow's secret key (never in the
# document), and a Ziggy status needs an executionId a client chose, of an execution that has ended.
CANNOT_SUCCEED = frozenset({"kestraWebhookGet", "kestraWebhookGetTenant", "ziggyExecutionStatus"})


def with_openapi_route(app: web.Application) -> web.Application:
    """Register the document's route unless ``create_app`` already does."""
    if not any(getattr(r.resource, "canonical", None) == openapi.OPENAPI_PATH for r in app.router.routes()):
        app.router.add_routes(routes_openapi.routes)
    return app


@dataclass
class Live:
    url: str
    token: str
    http: aiohttp.ClientSession
    app: web.Application

    async def call(self, method: str, path: str, **kwargs: Any) -> tuple[int, bytes]:
        async with self.http.request(method, f"{self.url}{path}", **kwargs) as response:
            return response.status, await response.read()


@pytest_asyncio.fixture
async def live(aiohttp_server: Any, db_url: str, tmp_path: Path) -> AsyncIterator[Live]:
    """A real server on 127.0.0.1 with the offline sample flows and an admin key."""
    flows = tmp_path / "flows"
    flows.mkdir()
    for path in OFFLINE_SAMPLES:
        shutil.copy(path, flows / path.name)
    settings = Settings(database_url=db_url, flows_dir=flows, poll_interval_s=0.2, files_dir=tmp_path / "files")
    app = with_openapi_route(create_app(settings, registry=registry_with_test_types()))
    server = await aiohttp_server(app)
    _, token = await auth.issue_key(app[SERVICES].repo, "openapi-admin", "admin")
    async with aiohttp.ClientSession(headers={"Authorization": f"Basic {token}"}) as http:
        yield Live(str(server.make_url("")).rstrip("/"), token, http, app)


def _routes(app: web.Application) -> dict[tuple[str, str], Any]:
    # /ui is the dashboard's page and static files (http_api/dashboard), not part of the API the document describes.
    return {(r.method.lower(), r.resource.canonical): r.handler for r in app.router.routes()
            if r.resource is not None and r.method not in ("HEAD", "OPTIONS") and not r.resource.canonical.startswith("/ui")}


def test_every_route_is_documented_with_its_scope(settings: Settings) -> None:
    routes = _routes(with_openapi_route(create_app(settings)))
    paths = openapi.document()["paths"]
    assert set(routes) == {(method, path) for path, ops in paths.items() for method in ops}
    for (method, path), handler in routes.items():
        operation = paths[path][method]
        assert (operation.get("security") == []) == getattr(handler, "public", False), (method, path)
        admin = getattr(handler, "scope", "execute") == "admin"
        signed = getattr(handler, "signed_link", False)  # a bad signed link is a 403 too
        assert ("403" in operation["responses"]) == (admin or signed), (method, path)
        assert ("401" in operation["responses"]) != getattr(handler, "public", False), (method, path)


def test_the_document_is_built_from_the_request_models() -> None:
    document = openapi.document()
    components = document["components"]["schemas"]
    ref = "#/components/schemas/{model}"
    for model in (schemas.ExecuteBody, schemas.KeyCreateBody, Flow):
        generated = model.model_json_schema(by_alias=True, ref_template=ref)
        for name, schema in generated.pop("$defs", {}).items():
            assert components[name] == schema, name
        assert components[model.__name__] == generated, model.__name__
    text = json.dumps(document)
    assert "$defs" not in text
    for target in set(re.findall(r'"\$ref": "#/components/(\w+)/([^"]+)"', text)):
        assert target[1] in document["components"][target[0]], target
    assert document["openapi"] == "3.1.0"
    assert document["info"] == {**document["info"], "title": "graph-runtime",
                                "version": importlib.metadata.version("graph-runtime")}
    schemes = document["components"]["securitySchemes"]
    assert schemes["basicAuth"] == {**schemes["basicAuth"], "type": "http", "scheme": "basic"}
    assert {(s["in"], s["name"]) for s in schemes.values() if s["type"] == "apiKey"} == \
        {("header", "execution-key"), ("query", "execution-key")}


async def test_the_document_is_public_and_valid_openapi_3_1(live: Live) -> None:
    async with aiohttp.ClientSession() as anonymous, anonymous.get(f"{live.url}{openapi.OPENAPI_PATH}") as response:
        assert response.status == 200 and response.content_type == "application/json"  # no key needed
        served = await response.json()
    assert served == json.loads(json.dumps(openapi.document()))
    import schemathesis

    loaded = schemathesis.openapi.from_dict(served)
    loaded.validate()  # against the OpenAPI 3.1 meta-schema
    operations = [result.ok() for result in loaded.get_all_operations()]
    assert len(operations) == sum(len(ops) for ops in served["paths"].values())


def _fits(model: type[pydantic.BaseModel], raw: bytes) -> dict[str, Any]:
    """``raw`` parses strictly as ``model`` and dumps back to the same JSON: the model is the exact shape."""
    try:
        parsed = model.model_validate_json(raw, strict=True)
    except pydantic.ValidationError as exc:
        raise AssertionError(f"{model.__name__} rejects {raw[:2000]!r}:\n{exc}") from None
    data: dict[str, Any] = json.loads(raw)
    assert parsed.model_dump(mode="json", by_alias=True, exclude_unset=True) == data, model.__name__
    return data


async def _expect(live: Live, model: type[pydantic.BaseModel], status: int, method: str, path: str,
                  **kwargs: Any) -> dict[str, Any]:
    got, raw = await live.call(method, path, **kwargs)
    assert got == status, (method, path, got, raw[:2000])
    return _fits(model, raw)


async def _ended(live: Live, task_id: int) -> dict[str, Any]:
    async def poll() -> dict[str, Any] | None:
        task = await _expect(live, wire.TaskView, 200, "GET", f"/api/v1/task/{task_id}")
        return task if task["status"] >= 3 else None

    return await eventually(poll, timeout=15)


async def _sleeping_and_failed_tasks(live: Live) -> tuple[dict[str, Any], dict[str, Any]]:
    """A task running (sleeping 30 s) and a failed one, from two flows added for them."""
    for definition in (SLEEPY, FAILING):
        await _expect(live, wire.FlowView, 201, "PUT", f"/api/v1/flows/{definition['id']}", json=definition)
    sleeping = await _expect(live, wire.TaskView, 201, "POST", "/api/v1/flow/sleepy/execute", json={})
    failed = await _expect(live, wire.TaskView, 201, "POST", "/api/v1/flow/failing/execute", json={})
    await eventually(lambda: live.app[SERVICES].scheduler.running_count, timeout=10)
    assert (await _ended(live, failed["id"]))["error"]["code"] == "node_failed"
    return sleeping, failed


async def test_real_answers_fit_the_wire_models(live: Live) -> None:
    body = {"node_settings": {"SYnn-start": {"data": {"image_url": "https://example.com/a.png", "style": "x"}}},
            "timeout_s": 30}
    queued = await _expect(live, wire.TaskView, 201, "POST", "/api/v1/flow/caption-image/execute", json=body)
    assert (await _ended(live, queued["id"]))["status_name"] == "succeeded"
    await _expect(live, wire.TaskView, 200, "POST", "/api/v1/scade/flow/caption-image/execute?wait=10", json={})
    sleeping, _ = await _sleeping_and_failed_tasks(live)
    await _expect(live, wire.TaskView, 200, "GET", f"/api/v1/task/{sleeping['id']}")
    await _expect(live, wire.TaskView, 202, "POST", f"/api/v1/task/{sleeping['id']}/cancel")
    assert (await _ended(live, sleeping["id"]))["nodes"]["nap"]["error"]["code"] == "cancelled"
    listed = await _expect(live, wire.TaskList, 200, "GET", "/api/v1/tasks?limit=2")
    assert listed["next_before"] is not None
    await _expect(live, wire.ErrorBody, 409, "POST", f"/api/v1/task/{sleeping['id']}/cancel")
    await _expect(live, wire.FlowList, 200, "GET", "/api/v1/flows")
    await _expect(live, wire.FlowView, 200, "GET", "/api/v1/flows/caption-image?revision=1")
    await _expect(live, wire.FlowView, 201, "PUT", "/api/v1/flows/hello", json=openapi.EXAMPLE_FLOW)
    await _expect(live, wire.FlowView, 200, "PUT", "/api/v1/flows/hello", json=openapi.EXAMPLE_FLOW)
    created = await _expect(live, wire.KeyCreated, 201, "POST", "/api/v1/keys", json={"name": "ci"})
    await _expect(live, wire.KeyList, 200, "GET", "/api/v1/keys")
    await _expect(live, wire.KeyView, 200, "DELETE", f"/api/v1/keys/{created['id']}")
    await _expect(live, wire.NodeTypeList, 200, "GET", "/api/v1/node-types")
    await _expect(live, wire.Health, 200, "GET", "/healthz")
    assert (await live.call("DELETE", "/api/v1/flows/hello"))[0] == 204


async def test_error_answers_fit_the_error_body(live: Live) -> None:
    invalid = await _expect(live, wire.ErrorBody, 422, "PUT", "/api/v1/flows/bad", json={"id": "bad", "nodes": []})
    assert invalid["error"]["problems"]
    missing = await _expect(live, wire.ErrorBody, 422, "POST", "/api/v1/flow/two-starts-two-ends/execute",
                            json={"start_node_id": "greet", "end_node_id": "card-end"})
    assert missing["error"]["missing"]
    await _expect(live, wire.ErrorBody, 400, "POST", "/api/v1/keys", data=b"[1]",
                  headers={"Content-Type": "application/json"})
    await _expect(live, wire.ErrorBody, 401, "GET", "/api/v1/flows", headers={"Authorization": "Basic nope"})
    await _expect(live, wire.ErrorBody, 404, "GET", "/api/v1/task/abc")
    await _expect(live, wire.ErrorBody, 415, "POST", "/api/v1/keys", data=b"name=x",
                  headers={"Content-Type": "application/x-www-form-urlencoded"})


async def test_what_schemathesis_found_the_server_and_the_document_now_agree_on(live: Live) -> None:
    """An empty query value is no value (the document allows it, the server ignores it); a PUT body
    may leave out ``id`` (the path gives it), and an ``id`` other than the path's is a 422."""
    document = openapi.document()
    queries = [p for ops in document["paths"].values() for op in ops.values() for p in op.get("parameters", ())
               if p["in"] == "query"]
    assert queries and all(p["allowEmptyValue"] is True for p in queries)
    everything = await live.call("GET", "/api/v1/tasks")
    assert await live.call("GET", "/api/v1/tasks?status=&flow_id=&limit=&before=") == everything
    assert everything[0] == 200

    put = document["components"]["schemas"][openapi.FLOW_PUT]
    assert put["properties"] == document["components"]["schemas"]["Flow"]["properties"]
    assert "id" not in put["required"] and "id" in document["components"]["schemas"]["Flow"]["required"]
    without_id = {name: value for name, value in openapi.EXAMPLE_FLOW.items() if name != "id"}
    created = await _expect(live, wire.FlowView, 201, "PUT", "/api/v1/flows/from-path", json=without_id)
    assert created["id"] == created["definition"]["id"] == "from-path"
    other = await _expect(live, wire.ErrorBody, 422, "PUT", "/api/v1/flows/from-path", json={**without_id, "id": "x"})
    assert other["error"]["field"] == "id"


@contextmanager
def _ignore_schemathesis_nul_probe() -> Iterator[None]:
    """Drop aiohttp's ERROR for the one request schemathesis sends with a NUL byte in a header.

    Before testing, schemathesis probes whether the server accepts ``X-Schemathesis-Probe-Null: \\x00``;
    aiohttp's parser refuses it with a plain 400 (right) and logs it at ERROR with a traceback (its
    choice, not ours). Only that record is dropped: any other ERROR still fails the test.
    """

    def keep(record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not (isinstance(exc, BadHttpMessage) and "X-Schemathesis-Probe-Null" in str(exc))

    logger = logging.getLogger("aiohttp.server")
    logger.addFilter(keep)
    try:
        yield
    finally:
        logger.removeFilter(keep)


async def _schemathesis(live: Live, reports: Path) -> tuple[int, str]:
    """``st run`` against the live server; its exit code and output."""
    command = [
        sys.executable, "-m", "schemathesis.cli", "run", f"{live.url}{openapi.OPENAPI_PATH}",
        "--header", f"Authorization: Basic {live.token}",
        "--checks", ",".join(CHECKS), "--max-examples", str(MAX_EXAMPLES), "--generation-deterministic",
        "--workers", "1", "--request-timeout", "10", "--no-color", "--output-truncate", "false",
        "--report", "json,har", "--report-json-path", str(reports / "run.json"),
        "--report-har-path", str(reports / "run.har"),
    ]
    proc = await asyncio.create_subprocess_exec(*command, cwd=reports, env=process_env(),
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), ST_TIMEOUT_S)
    except TimeoutError:
        proc.kill()
        await proc.communicate()
        raise AssertionError(f"schemathesis still running after {ST_TIMEOUT_S}s") from None
    return proc.returncode or 0, out.decode(errors="replace")


def _succeeded_operations(har: dict[str, Any]) -> set[str]:
    """``METHOD /path/{template}`` of every operation that answered a 2xx at least once."""
    templates = [(re.compile("^" + re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(path)) + "$"), path)
                 for path in openapi.document()["paths"]]
    ok = set()
    for entry in har["log"]["entries"]:
        if 200 <= entry["response"]["status"] < 300:
            path = "/" + entry["request"]["url"].split("/", 3)[3].split("?")[0]
            ok |= {f"{entry['request']['method']} {template}" for pattern, template in templates if pattern.match(path)}
    return ok


@pytest.mark.timeout(ST_TIMEOUT_S + 30)
async def test_schemathesis_finds_no_server_error_and_no_schema_break(live: Live, tmp_path: Path) -> None:
    assert importlib.util.find_spec("schemathesis"), "install the test extra: pip install -e '.[test]'"
    # Tasks 1 and 2 exist when it starts: one sleeping (so a cancel can answer 202) and one failed. Their
    # flows are deleted first: schemathesis finds flows through GET /flows, and ?wait=60 on the sleeping
    # one would hold it for a minute.
    sleeping, _ = await _sleeping_and_failed_tasks(live)
    for definition in (SLEEPY, FAILING):
        assert (await live.call("DELETE", f"/api/v1/flows/{definition['id']}"))[0] == 204
    reports = tmp_path / "schemathesis"
    reports.mkdir()
    with _ignore_schemathesis_nul_probe():
        code, output = await _schemathesis(live, reports)
    report = json.loads((reports / "run.json").read_text())
    assert code == 0 and not report["failures"] and not report["errors"], output
    assert report["test_cases"]["generated"] >= 500, output
    # Every operation but the one serving the document it loaded (which schemathesis leaves out).
    tested = [op for op in openapi.OPERATIONS if op.path != openapi.OPENAPI_PATH]
    assert report["operations"]["tested"] == report["operations"]["total"] == len(tested), output
    # Not vacuous: past auth, every reading endpoint and the main writes answered 2xx at least once.
    ok = _succeeded_operations(json.loads((reports / "run.har").read_text()))
    expected = {f"{op.method.upper()} {op.path}" for op in tested if op.operation_id not in CANNOT_SUCCEED
                and (op.method == "get" or op.operation_id in ("executeFlow", "putFlow", "createKey", "revokeKey"))}
    assert expected <= ok, sorted(expected - ok)
    await live.call("POST", f"/api/v1/task/{sleeping['id']}/cancel")  # leave nothing running for the teardown
