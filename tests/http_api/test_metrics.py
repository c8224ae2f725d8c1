"""GET /metrics: Prometheus text a scraper reads, behind a key unless METRICS_PUBLIC, per app."""

from __future__ import annotations

import json
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from http_api import auth
from http_api.app import create_app
from http_api.body import SERVICES
from http_api.routes_metrics import TELEMETRY
from http_api.settings import Settings
from storage.callbacks import DELIVERED, GIVEN_UP, PENDING, Outcome
from tests.conftest import ROOT, Api
from tests.support import FlowBuilder, registry_with_test_types

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str) -> Samples:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(found: Samples, name: str, **labels: str) -> float | None:
    return found.get((name, frozenset(labels.items())))


def matching(found: Samples, name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
    """Every sample of ``name`` whose labels include ``labels``."""
    return [(dict(key[1]), v) for key, v in found.items()
            if key[0] == name and set(labels.items()) <= set(key[1])]


async def scrape(api: Api, token: str | None = None) -> Samples:
    response = await api.request("GET", "/metrics", token=token)
    assert response.status == 200, await response.text()
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return samples(await response.text())


async def test_metrics_need_a_key_by_default(api: Api) -> None:
    anonymous = await api.client.get("/metrics")
    assert anonymous.status == 401
    assert (await anonymous.json())["error"]["code"] == "unauthorized"
    execute_key = await api.new_key("execute")  # any key reads them, not only an admin's
    assert value(await scrape(api, execute_key), "graph_runtime_tasks_queued") == 0.0


async def test_metrics_public_serves_them_without_a_key(aiohttp_client: Any, settings: Settings) -> None:
    public = settings.model_copy(update={"metrics_public": True})
    client = await aiohttp_client(create_app(public, registry=registry_with_test_types()))
    response = await client.get("/metrics")
    assert response.status == 200
    assert "graph_runtime_tasks_running " in await response.text()
    assert (await client.get("/api/v1/flows")).status == 401  # only /metrics opens


async def test_a_task_shows_in_tasks_nodes_and_cost(api: Api) -> None:
    flow = (FlowBuilder("metered").node("a", "start", data={"v": 1}).node("b", "test.echo").node("c", "test.fail")
            .edge("a", "b", input="v").edge("b", "c", input="v").build())
    await api.put_flow(flow)
    ok = await api.execute("metered", {"end_node_id": "b"})
    await api.wait_for_status(ok["id"], "succeeded")
    failed = await api.execute("metered", {"end_node_id": "c"})
    await api.wait_for_status(failed["id"], "failed")
    found = await scrape(api)
    assert value(found, "graph_runtime_tasks_total", flow="metered", status="succeeded") == 1.0
    assert value(found, "graph_runtime_tasks_total", flow="metered", status="failed") == 1.0
    # b ran twice (once per task), c once and failed; each in its type's histogram
    assert value(found, "graph_runtime_node_duration_seconds_count", type="test.echo", status="succeeded") == 2.0
    assert value(found, "graph_runtime_node_duration_seconds_count", type="test.fail", status="failed") == 1.0
    assert value(found, "graph_runtime_node_duration_seconds_count", type="start", status="succeeded") == 2.0
    assert value(found, "graph_runtime_node_cost_total", type="test.echo") == pytest.approx(1.0)  # 0.5 a run
    assert value(found, "graph_runtime_tasks_queued") == 0.0
    assert value(found, "graph_runtime_tasks_running") == 0.0


async def test_running_and_queued_are_read_from_the_database(aiohttp_client: Any, settings: Settings) -> None:
    one_worker = settings.model_copy(update={"max_concurrent_jobs": 1})
    client = await aiohttp_client(create_app(one_worker, registry=registry_with_test_types()))
    _, token = await auth.issue_key(client.server.app[SERVICES].repo, "admin", "admin")
    api = Api(client, token)
    await api.put_flow(FlowBuilder("slow").node("s", "test.sleep", seconds=30).build())
    only_s = {"start_node_id": "s", "end_node_id": "s"}
    first = await api.execute("slow", only_s)
    await api.wait_for_status(first["id"], "running")
    second = await api.execute("slow", only_s)
    found = await scrape(api)
    assert value(found, "graph_runtime_tasks_running") == 1.0
    assert value(found, "graph_runtime_tasks_running_here") == 1.0
    assert value(found, "graph_runtime_tasks_queued") == 1.0
    for task in (second, first):
        await api.json("POST", f"/api/v1/task/{task['id']}/cancel", None)
    await api.wait_for_status(first["id"], "cancelled")
    found = await scrape(api)
    assert value(found, "graph_runtime_tasks_total", flow="slow", status="cancelled") == 1.0  # the running one
    assert value(found, "graph_runtime_tasks_running") == 0.0


async def test_http_latency_is_labelled_by_route_pattern_not_path(api: Api) -> None:
    for task_id in (101, 102, 103):
        assert (await api.request("GET", f"/api/v1/task/{task_id}")).status == 404
    for path in ("/no/such/a", "/no/such/b"):
        assert (await api.request("GET", path)).status == 404
    found = await scrape(api)
    assert value(found, "graph_runtime_http_request_duration_seconds_count",
                 method="GET", route="/api/v1/task/{task_id}", status="404") == 3.0
    assert value(found, "graph_runtime_http_request_duration_seconds_count",
                 method="GET", route="unmatched", status="404") == 2.0
    routes = {labels["route"] for labels, _ in matching(found, "graph_runtime_http_request_duration_seconds_count")}
    assert not any(route.startswith("/no/") or "101" in route for route in routes), routes


async def test_database_statements_are_timed(api: Api) -> None:
    await api.put_flow(FlowBuilder("db").node("a", "start", data={"v": 1}).build())  # goes through SQLAlchemy
    found = await scrape(api)
    counted = {labels["verb"]: v for labels, v in matching(found, "graph_runtime_db_statement_duration_seconds_count")}
    assert counted.get("select", 0) > 0 and counted.get("insert", 0) > 0, counted
    assert set(counted) <= {"select", "insert", "update", "delete", "begin", "commit", "rollback", "pragma", "with",
                            "other"}


async def test_two_servers_in_one_process_keep_their_own_metrics(api: Api, aiohttp_client: Any, settings: Settings,
                                                                   template_db: Path, tmp_path: Path) -> None:
    shutil.copy(template_db, tmp_path / "other.db")  # its own database: its scheduler must not take our task
    other_settings = settings.model_copy(update={"metrics_public": True,
                                                 "database_url": f"sqlite+aiosqlite:///{tmp_path / 'other.db'}"})
    other = await aiohttp_client(create_app(other_settings, registry=registry_with_test_types()))
    await api.put_flow(FlowBuilder("here").node("a", "start", data={"v": 1}).build())
    done = await api.execute("here", {"end_node_id": "a"})
    await api.wait_for_status(done["id"], "succeeded")
    mine = await scrape(api)
    theirs = samples(await (await other.get("/metrics")).text())
    assert value(mine, "graph_runtime_tasks_total", flow="here", status="succeeded") == 1.0
    assert value(theirs, "graph_runtime_tasks_total", flow="here", status="succeeded") is None


async def test_the_grafana_dashboard_queries_only_metrics_the_server_serves(api: Api) -> None:
    dashboard = json.loads((ROOT / "docs" / "grafana-dashboard.json").read_text(encoding="utf-8"))
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    assert len(exprs) >= 10
    await api.put_flow(FlowBuilder("dash").node("a", "start", data={"v": 1}).node("m", "merge")
                       .edge("a", "m", input="v").build())
    for _ in range(2):  # so the labelled series exist; the second merge is served from the output cache
        done = await api.execute("dash", {"end_node_id": "m"})
        await api.wait_for_status(done["id"], "succeeded")
    response = await api.request("GET", "/metrics")
    served = {s.name for family in text_string_to_metric_families(await response.text()) for s in family.samples}
    used = {name for expr in exprs for name in re.findall(r"graph_runtime_\w+", expr)}
    assert used - served <= {"graph_runtime_node_saved_cost_total"}, used - served  # merge costs nothing to save
    assert {"graph_runtime_tasks_total", "graph_runtime_node_duration_seconds_bucket",
            "graph_runtime_http_request_duration_seconds_bucket"} <= used


async def test_callback_attempts_are_counted_by_outcome(api: Api) -> None:
    # Each outcome's series is served from the start, at 0; a batch's attempts land in theirs.
    for outcome in ("delivered", "failed", "given_up"):
        assert value(await scrape(api), "graph_runtime_callback_attempts_total", outcome=outcome) == 0.0
    at = datetime.now(UTC)
    outcomes = [Outcome(1, 1, at, 0.01, 200, None, DELIVERED, None),
                Outcome(2, 1, at, 0.01, 500, "answered 500", PENDING, at),
                Outcome(3, 1, at, 0.01, None, "timeout", PENDING, at),
                Outcome(4, 9, at, 0.01, 500, "answered 500", GIVEN_UP, None)]
    api.app[TELEMETRY].metrics.callbacks_attempted(outcomes)
    found = await scrape(api)
    assert value(found, "graph_runtime_callback_attempts_total", outcome="delivered") == 1.0
    assert value(found, "graph_runtime_callback_attempts_total", outcome="failed") == 2.0
    assert value(found, "graph_runtime_callback_attempts_total", outcome="given_up") == 1.0


async def test_the_telemetry_bench_runs(tmp_path: Path) -> None:
    # `python -m bench.telemetry` at a tiny size, so it cannot rot; no timing is asserted.
    from bench import telemetry as bench_telemetry

    figures = await bench_telemetry.measure(flows=2, rounds=2, workdir=tmp_path)
    assert set(figures) >= {"on", "on_sdk", "on_sdk_10pct"}
    assert all(figures[name]["cpu_on_ms_per_flow"] > 0 for name in ("on", "on_sdk"))
    replayed = await bench_telemetry.listener_cost(flows=3, rounds=2)
    assert replayed["on"]["cpu_ms_per_flow"] > 0 and replayed["chain_cpu_ms_per_flow"] > 0
