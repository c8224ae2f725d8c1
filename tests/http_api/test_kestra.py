"""Kestra's own Python clients (``kestra``'s ``Flow``, ``kestrapy``'s ``KestraClient``), unmodified, against a real server.

Both clients block (requests), so each call runs in a thread while the test's loop serves it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import warnings
from typing import Any

import aiohttp
import kestra
import pytest

from tests.conftest import Api
from tests.support import FlowBuilder

with warnings.catch_warnings():  # kestrapy's generated models shadow BaseModel.validate: a warning at import
    warnings.simplefilter("ignore", UserWarning)
    from kestrapy import KestraClient
    from kestrapy.exceptions import NotFoundException, UnauthorizedException
    from kestrapy.models.state_type import StateType

DOC = b"kestra file input\n" * 100
HOOK_KEY = "kestra-hook-key-0123456789"


def kflow(flow_id: str = "kflow", namespace: str | None = "company.team") -> dict[str, Any]:
    fields: dict[str, Any] = {"namespace": namespace} if namespace else {}
    return (FlowBuilder(flow_id, inputs={"type": "object", "properties": {"greeting": {"type": "string"},
                                                                         "count": {"type": "integer"}}},
                        triggers=[{"type": "webhook", "key": HOOK_KEY}], **fields)
            .node("in", "start", data={"greeting": "hello", "count": 1})
            .node("size", "test.file_size").node("out", "end")
            .edge("in", "size", output="doc", input="file")
            .edge("in", "out", output="greeting", input="greeting").edge("in", "out", output="count", input="count")
            .edge("size", "out", output="sha256", input="sha256").edge("size", "out", output="name", input="name")
            .build())


def plain_flow(flow_id: str = "kplain", **settings: Any) -> dict[str, Any]:
    return (FlowBuilder(flow_id).node("in", "start", data={"greeting": "hello"}).node("out", "end")
            .edge("in", "out", output="greeting", input="greeting").build())


def base_url(api: Api) -> str:
    return str(api.client.make_url("")).rstrip("/")


def kestra_flow(api: Api, **options: Any) -> kestra.Flow:
    flow = kestra.Flow(poll_interval=0.05, **options)  # type: ignore[arg-type]  # a float works: time.sleep
    flow.hostname = base_url(api)
    flow.api_token = api.token  # sent as Bearer
    return flow


async def test_kestra_flow_execute_with_a_file_input_waits_for_success_and_reads_the_log(api: Api) -> None:
    await api.put_flow(kflow())
    flow = kestra_flow(api)
    execution = await asyncio.to_thread(flow.execute, "company.team", "kflow",
                                        {"greeting": "bonjour", "files": ("doc", DOC, "text/plain")})
    assert execution.status == "SUCCESS"
    assert "[size] succeeded" in execution.log
    task = await api.task(int(execution.execution_id))
    assert task["result"] == {"greeting": "bonjour", "count": 1, "sha256": hashlib.sha256(DOC).hexdigest(), "name": "doc"}


async def test_kestra_flow_with_a_tenant_labels_and_basic_auth_fire_and_forget(api: Api) -> None:
    await api.put_flow(plain_flow())
    flow = kestra_flow(api, wait_for_completion=False, labels_from_inputs=True, tenant="main")
    flow.api_token = None
    key_id, secret = base64.b64decode(api.token).decode().split(":", 1)
    flow.user, flow.password = key_id, secret  # type: ignore[attr-defined]  # Flow reads it, never sets it
    execution = await asyncio.to_thread(flow.execute, "default", "kplain", {"greeting": "hej"})
    assert execution.status == "STARTED"
    task = await api.wait_for_status(int(execution.execution_id), "succeeded")
    assert task["result"] == {"greeting": "hej"}
    assert task["data"]["init_context"]["labels"] == [{"key": "greeting", "value": "hej"}]


async def test_kestra_flow_sees_a_failed_execution(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    await api.put_flow(FlowBuilder("kfail").node("in", "start").node("boom", "test.fail", message="it broke")
                       .node("out", "end").edge("in", "boom").edge("boom", "out").build())
    execution = await asyncio.to_thread(kestra_flow(api).execute, "default", "kfail")
    assert execution.status == "FAILED"
    assert "ERROR [boom] failed: node_failed: it broke" in execution.log
    # The client reports the failure itself, at ERROR on the root logger: that one is expected, ours are not.
    logged = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert [record.pathname.endswith("kestra.py") for record in logged] == [True]
    caplog.clear()


def _kestrapy_run(url: str, token: str) -> dict[str, Any]:
    client = KestraClient(host=url, token=token)
    created = client.executions.create_execution(
        tenant="main", namespace="company.team", id="kflow", labels=["team:data"], wait=True,
        inputs={"greeting": "salut", "count": 7, "doc": ("report.txt", DOC, "text/plain")})
    fetched = client.executions.execution(created.id, tenant="main")
    log = client.logs.download_logs_from_execution(execution_id=created.id, tenant="main")
    return {"created": created, "fetched": fetched, "log": log}


async def test_kestrapy_create_execution_wait_get_and_logs(api: Api) -> None:
    await api.put_flow(kflow())
    out = await asyncio.to_thread(_kestrapy_run, base_url(api), api.token)
    created, fetched = out["created"], out["fetched"]
    assert created.state.current == StateType.SUCCESS  # validated by kestrapy's own models
    assert fetched.id == created.id == created.original_id and not fetched.deleted
    assert (fetched.namespace, fetched.flow_id, fetched.flow_revision) == ("company.team", "kflow", 1)
    assert [h.state for h in fetched.state.histories] == [StateType.CREATED, StateType.RUNNING, StateType.SUCCESS]
    assert [(label.key, label.value) for label in fetched.labels] == [("team", "data")]
    assert fetched.inputs["count"] == 7 and fetched.inputs["doc"]["name"] == "report.txt"  # typed by `inputs`
    assert fetched.inputs["doc"]["url"].startswith("/api/v1/files/")  # a signed link, as in every answer
    assert {run.task_id for run in fetched.task_run_list} == {"in", "size", "out"}
    assert "[size] succeeded" in out["log"] and "execution SUCCESS" in out["log"]
    task = await api.task(int(created.id))
    assert task["result"]["sha256"] == hashlib.sha256(DOC).hexdigest() and task["result"]["count"] == 7


def _kestrapy_errors(url: str, token: str) -> list[type[Exception]]:
    raised = []
    calls = (
        lambda: KestraClient(host=url, token="bm90OmFrZXk=").executions.execution("1", tenant="main"),
        lambda: KestraClient(host=url, token=token).executions.create_execution(
            tenant="main", namespace="elsewhere", id="kflow"),
        lambda: KestraClient(host=url, token=token).executions.execution("999999", tenant="main"),
    )
    for call in calls:
        try:
            call()
        except Exception as exc:
            raised.append(type(exc))
    return raised


async def test_kestrapy_errors_unknown_key_wrong_namespace_unknown_execution(api: Api) -> None:
    await api.put_flow(kflow())
    raised = await asyncio.to_thread(_kestrapy_errors, base_url(api), api.token)
    assert raised == [UnauthorizedException, NotFoundException, NotFoundException]
    assert (await api.json("GET", "/api/v1/tasks", 200))["tasks"] == []


async def test_the_webhook_path_starts_the_flow_without_a_key_and_checks_namespace_and_key(api: Api) -> None:
    await api.put_flow(kflow())
    url = f"/api/v1/main/executions/webhook/company.team/kflow/{HOOK_KEY}"
    started = await api.client.post(url, json={"doc_id": 1})
    answer = await started.json()
    assert started.status == 200, answer
    assert answer["namespace"] == "company.team" and answer["state"]["current"] == "CREATED"
    for wrong in (f"/api/v1/executions/webhook/default/kflow/{HOOK_KEY}",
                  f"/api/v1/executions/webhook/company.team/kflow/{HOOK_KEY}-no"):
        assert (await api.client.post(wrong, json={})).status == 404
    task = await api.task(int(answer["id"]))
    assert task["data"]["node_settings"]["in"]["data"]["body"] == {"doc_id": 1}


@pytest.mark.parametrize("namespace", [None, "company.team"])
async def test_a_flow_shows_its_namespace(api: Api, namespace: str | None) -> None:
    await api.put_flow(kflow(namespace=namespace))
    shown = await api.json("GET", "/api/v1/flows/kflow", 200)
    assert shown["namespace"] == (namespace or "default")


async def test_inputs_must_be_a_form_and_typed_inputs_are_checked(api: Api) -> None:
    await api.put_flow(kflow())
    path = "/api/v1/executions/company.team/kflow"
    assert (await api.request("POST", path, json={"greeting": "x"})).status == 415
    for form in ({"count": "many"}, aiohttp.FormData({"count": "many"}, default_to_multipart=True)):
        refused = await api.json("POST", path, 422, data=form)
        assert refused["error"]["field"] == "node_settings.in.data.count"
    assert (await api.json("GET", "/api/v1/tasks", 200))["tasks"] == []
    started = await api.json("POST", path, 200, data={"count": "3", "greeting": "3"})  # urlencoded: text inputs
    task = await api.task(int(started["id"]))
    assert task["data"]["node_settings"]["in"]["data"] == {"count": 3, "greeting": "3"}
