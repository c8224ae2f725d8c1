"""Traces (the otel extra): a span per task and per node, a caller's traceparent continued and passed on."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from http_api import auth
from http_api.app import create_app
from http_api.body import SERVICES
from http_api.settings import Settings
from http_api.telemetry import Telemetry
from tests.conftest import ROOT, Api
from tests.support import FlowBuilder, eventually, registry_with_test_types

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest_asyncio.fixture
async def traced(aiohttp_client: Any, settings: Settings, exporter: InMemorySpanExporter) -> AsyncIterator[Api]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    client = await aiohttp_client(create_app(settings, registry=registry_with_test_types(), tracer_provider=provider))
    _, token = await auth.issue_key(client.server.app[SERVICES].repo, "admin", "admin")
    yield Api(client, token)


@pytest_asyncio.fixture
async def downstream(aiohttp_server: Any) -> Any:
    """A service our http_request node calls; it records the traceparent it was sent."""
    seen: list[str | None] = []

    async def answer(request: web.Request) -> web.Response:
        seen.append(request.headers.get("traceparent"))
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_route("*", "/echo", answer)
    server = await aiohttp_server(app)
    server.seen = seen
    return server


def by_name(spans: tuple[ReadableSpan, ...]) -> dict[str, ReadableSpan]:
    return {span.name: span for span in spans}


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def times(span: ReadableSpan) -> tuple[int, int]:
    assert span.start_time is not None and span.end_time is not None
    return span.start_time, span.end_time


async def finished_spans(exporter: InMemorySpanExporter, count: int) -> tuple[ReadableSpan, ...]:
    return await eventually(lambda: exporter.get_finished_spans() if len(exporter.get_finished_spans()) >= count
                            else None)


async def test_a_task_and_its_nodes_make_spans_continuing_the_callers_trace(
        traced: Api, exporter: InMemorySpanExporter, downstream: Any) -> None:
    flow = (FlowBuilder("traced").node("a", "start", data={"v": 1}).node("b", "test.echo")
            .node("call", "http_request", method="POST", url=str(downstream.make_url("/echo")))
            .edge("a", "b", input="v").edge("b", "call", input="json").build())
    await traced.put_flow(flow)
    task = await traced.execute("traced", {"end_node_id": "call"}, headers={"traceparent": TRACEPARENT})
    done = await traced.wait_for_status(task["id"], "succeeded")
    spans = by_name(await finished_spans(exporter, 4))
    task_span, node_b, call = spans["task traced"], spans["node b"], spans["node call"]
    assert task_span.context.trace_id == int(CALLER_TRACE, 16)
    assert task_span.parent is not None and task_span.parent.span_id == int(CALLER_SPAN, 16)
    assert attrs(task_span)["graph_runtime.flow_id"] == "traced"
    assert attrs(task_span)["graph_runtime.revision"] == 1
    assert attrs(task_span)["graph_runtime.task_id"] == task["id"]
    assert attrs(task_span)["graph_runtime.status"] == "succeeded"
    assert attrs(task_span)["graph_runtime.cost"] == pytest.approx(done["execution_cost"])
    for node in (spans["node a"], node_b, call):
        assert node.parent is not None and node.parent.span_id == task_span.context.span_id
        assert node.context.trace_id == task_span.context.trace_id
        assert times(task_span)[0] <= times(node)[0] <= times(node)[1] <= times(task_span)[1]
    assert attrs(node_b)["graph_runtime.node_type"] == "test.echo"
    assert attrs(node_b)["graph_runtime.attempts"] == 1
    assert attrs(node_b)["graph_runtime.cost"] == pytest.approx(0.5)
    assert attrs(call)["graph_runtime.node_type"] == "http_request"
    # the downstream service was called inside the node's span: it can continue our trace
    assert downstream.seen == [f"00-{CALLER_TRACE}-{call.context.span_id:016x}-01"]


async def test_without_a_traceparent_a_task_starts_its_own_trace_and_failures_show(
        traced: Api, exporter: InMemorySpanExporter) -> None:
    await traced.put_flow(FlowBuilder("breaks").node("a", "start", data={"v": 1}).node("f", "test.fail", message="nope")
                          .edge("a", "f", input="v").build())
    task = await traced.execute("breaks", {"end_node_id": "f"})
    await traced.wait_for_status(task["id"], "failed")
    spans = by_name(await finished_spans(exporter, 3))
    task_span, failed = spans["task breaks"], spans["node f"]
    assert task_span.parent is None
    assert failed.status.status_code is StatusCode.ERROR and "nope" in (failed.status.description or "")
    assert task_span.status.status_code is StatusCode.ERROR
    assert attrs(failed)["graph_runtime.status"] == "failed"


async def test_a_caller_that_does_not_sample_gets_no_spans_but_its_trace_goes_on(
        traced: Api, exporter: InMemorySpanExporter, downstream: Any) -> None:
    await traced.put_flow(FlowBuilder("quiet").node("a", "start", data={"v": 1})
                          .node("call", "http_request", method="POST", url=str(downstream.make_url("/echo")))
                          .edge("a", "call", input="json").build())
    unsampled = f"00-{CALLER_TRACE}-{CALLER_SPAN}-00"
    task = await traced.execute("quiet", {"end_node_id": "call"}, headers={"traceparent": unsampled})
    await traced.wait_for_status(task["id"], "succeeded")
    assert exporter.get_finished_spans() == ()
    [sent] = downstream.seen
    assert sent is not None and sent.startswith(f"00-{CALLER_TRACE}-") and sent.endswith("-00"), sent


async def test_no_span_no_traceparent_outside_a_node(traced: Api, downstream: Any) -> None:
    # The server's own session calls nothing in a node's name when no node runs: no header is made up.
    session = traced.services.executor.http
    async with session.get(downstream.make_url("/echo")) as response:
        assert response.status == 200
    assert downstream.seen == [None]


def test_without_the_extra_nothing_imports_opentelemetry(tmp_path: Any, template_db: Any) -> None:
    # A child process where opentelemetry cannot be imported runs a task over HTTP and serves /metrics.
    program = f"""
import sys
sys.modules["opentelemetry"] = None  # as if the otel extra were not installed
import asyncio, shutil
from aiohttp.test_utils import TestClient, TestServer
from http_api import auth
from http_api.app import create_app
from http_api.body import SERVICES
from http_api.settings import Settings
from http_api.telemetry import Telemetry
from tests.support import FlowBuilder, registry_with_test_types

async def main():
    shutil.copy({str(template_db)!r}, {str(tmp_path / 'db.sqlite')!r})
    settings = Settings(database_url="sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}", flows_dir=None,
                        files_dir={str(tmp_path / 'files')!r}, poll_interval_s=0.1)
    async with TestClient(TestServer(create_app(settings, registry=registry_with_test_types()))) as client:
        _, token = await auth.issue_key(client.server.app[SERVICES].repo, "a", "admin")
        headers = {{"Authorization": "Basic " + token, "traceparent": "{TRACEPARENT}"}}
        flow = FlowBuilder("plain").node("a", "start", data={{"v": 1}}).build()
        assert (await client.put("/api/v1/flows/plain", json=flow, headers=headers)).status == 201
        task = await (await client.post("/api/v1/flow/plain/execute?wait=10", json={{"end_node_id": "a"}},
                                        headers=headers)).json()
        assert task["status_name"] == "succeeded", task
        text = await (await client.get("/metrics", headers=headers)).text()
        assert 'graph_runtime_tasks_total{{flow="plain",status="succeeded"}} 1.0' in text, text
    loaded = [name for name in sys.modules if name.startswith("opentelemetry") and sys.modules[name] is not None]
    assert not loaded, loaded
    print("ok")

asyncio.run(main())
"""
    result = subprocess.run([sys.executable, "-c", program], cwd=ROOT, capture_output=True, text=True, timeout=50,
                            check=False)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stdout + result.stderr


def test_tracing_stays_off_until_an_sdk_provider_is_set_up() -> None:
    # Installed but not configured (no opentelemetry-instrument, no provider set): spans would all be
    # no-ops, so none of their bookkeeping is done; a provider given (or set globally) turns it on.
    assert Telemetry.create().tracing is None
    assert Telemetry.create(TracerProvider()).tracing is not None


async def test_a_retried_node_is_one_span_counting_its_attempts(traced: Api, exporter: InMemorySpanExporter) -> None:
    await traced.put_flow(FlowBuilder("retried").node("a", "start", data={"v": 1})
                          .node("f", "test.fail", transient=True, succeed_on_attempt=3, retries=3, retry_backoff_s=0.01)
                          .edge("a", "f", input="v").build())
    task = await traced.execute("retried", {"end_node_id": "f"})
    await traced.wait_for_status(task["id"], "succeeded")
    spans = await finished_spans(exporter, 3)
    [node] = [span for span in spans if span.name == "node f"]
    assert attrs(node)["graph_runtime.attempts"] == 3
    assert attrs(node)["graph_runtime.status"] == "succeeded"
    assert node.status.status_code is not StatusCode.ERROR


async def test_an_api_process_keeps_the_traceparent_for_the_worker_that_runs_the_task(
        aiohttp_client: Any, settings: Settings, exporter: InMemorySpanExporter) -> None:
    # `serve --workers 0` (no SDK set up in it, so no tracing of its own) and a worker on the same
    # SQLite file: the caller's trace goes through the database with the task.
    api_only = await aiohttp_client(create_app(settings.model_copy(update={"workers": 0}),
                                               registry=registry_with_test_types()))
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    # The worker: started (it runs the task), never called.
    await aiohttp_client(create_app(settings, registry=registry_with_test_types(), tracer_provider=provider))
    _, token = await auth.issue_key(api_only.server.app[SERVICES].repo, "admin", "admin")
    api = Api(api_only, token)
    await api.put_flow(FlowBuilder("handed").node("a", "start", data={"v": 1}).node("b", "test.echo")
                       .edge("a", "b", input="v").build())
    task = await api.execute("handed", {"end_node_id": "b"}, headers={"traceparent": TRACEPARENT})
    assert task["data"]["traceparent"] == TRACEPARENT
    done = await api.wait_for_status(task["id"], "succeeded")
    assert done["data"]["traceparent"] == TRACEPARENT
    spans = by_name(await finished_spans(exporter, 3))
    task_span = spans["task handed"]
    assert attrs(task_span)["graph_runtime.task_id"] == task["id"]
    assert task_span.context.trace_id == int(CALLER_TRACE, 16)
    assert task_span.parent is not None and task_span.parent.span_id == int(CALLER_SPAN, 16)
    assert spans["node b"].context.trace_id == int(CALLER_TRACE, 16)


async def test_the_traceparent_shows_in_data_only_when_a_valid_one_was_sent(traced: Api) -> None:
    await traced.put_flow(FlowBuilder("echoed").node("a", "start", data={"v": 1}).build())
    plain = await traced.execute("echoed", {"end_node_id": "a"})
    assert "traceparent" not in plain["data"]  # Scade's echo, unchanged
    for invalid in (TRACEPARENT.upper(), f"00-{'0' * 32}-{CALLER_SPAN}-01", f"00-{CALLER_TRACE}-{'0' * 16}-01",
                    f"ff-{CALLER_TRACE}-{CALLER_SPAN}-01", f"{TRACEPARENT}-extra", "nonsense"):
        task = await traced.execute("echoed", {"end_node_id": "a"}, headers={"traceparent": invalid})
        assert "traceparent" not in task["data"], invalid
    later_version = await traced.execute("echoed", {"end_node_id": "a"},
                                         headers={"traceparent": f"01-{CALLER_TRACE}-{CALLER_SPAN}-01-future"})
    assert later_version["data"]["traceparent"] == TRACEPARENT  # read as version 00, as W3C asks
