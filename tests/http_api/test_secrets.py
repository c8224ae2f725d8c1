"""Secrets and modes through the API and the CLI, on a real server: values go in and never come out
(answers, tasks, node outputs, errors, log lines, the database file), dev/prod values by mode."""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientResponse

from http_api.secret_resolver import SecretResolver
from nodes.builtin.template import Template
from tests.conftest import Api
from tests.processes import cli_command, process_env, sqlite_url
from tests.support import FlowBuilder

PROD_VALUE = "sk-prod-" + "7c1e" * 8
DEV_VALUE = "sk-dev-" + "b22d" * 8
SECRETS = "/api/v1/secrets"


async def put_secret(api: Api, name: str, value: str, mode: str | None = None, status: int = 204,
                     token: str | None = None) -> ClientResponse:
    response = await api.request("PUT", f"{SECRETS}/{name}", params={"mode": mode} if mode else {},
                                 json={"value": value}, token=token)
    assert response.status == status, (response.status, await response.text())
    return response


def echo_flow(flow_id: str = "uses-secret", template: str = "key={{ key }}") -> dict[str, Any]:
    """start → template (its flow settings name the secret API_KEY) → end, which returns the text."""
    return (FlowBuilder(flow_id)
            .node("in", "start", data={})
            .node("say", "template", template=template, key={"$secret": "API_KEY"})
            .node("out", "end")
            .edge("in", "say", input="unused")
            .edge("say", "out", output="text", input="text")
            .build())


async def run(api: Api, flow_id: str, body: dict[str, Any] | None = None, **kwargs: Any) -> Any:
    task = await api.execute(flow_id, body, **kwargs)
    return await api.wait_for_status(task["id"], "succeeded", "failed")


def assert_nowhere(value: str, *places: Any) -> None:
    for place in places:
        assert value not in str(place)


# --- the API ---------------------------------------------------------------------------------


async def test_set_list_and_delete_never_show_a_value(api: Api) -> None:
    await put_secret(api, "API_KEY", PROD_VALUE)
    await put_secret(api, "API_KEY", DEV_VALUE, mode="dev")
    await put_secret(api, "OTHER", "x-1", mode="dev")
    listed = await api.json("GET", SECRETS, 200)
    assert [(s["name"], s["modes"]) for s in listed["secrets"]] == [("API_KEY", ["prod", "dev"]), ("OTHER", ["dev"])]
    assert set(listed["secrets"][0]) == {"name", "modes", "created", "updated"}
    assert_nowhere(PROD_VALUE, listed)
    assert_nowhere(DEV_VALUE, listed)
    assert (await api.request("DELETE", f"{SECRETS}/API_KEY", params={"mode": "dev"})).status == 204
    assert (await api.request("DELETE", f"{SECRETS}/OTHER")).status == 204
    listed = await api.json("GET", SECRETS, 200)
    assert [(s["name"], s["modes"]) for s in listed["secrets"]] == [("API_KEY", ["prod"])]
    missing = await api.json("DELETE", f"{SECRETS}/OTHER", 404)
    assert missing["error"]["code"] == "secret_not_found"
    assert (await api.request("DELETE", f"{SECRETS}/API_KEY", params={"mode": "dev"})).status == 404


@pytest.mark.parametrize(("path", "params", "body", "field"), [
    ("bad-name", {}, {"value": "v"}, "name"),
    ("x" * 65, {}, {"value": "v"}, "name"),
    ("GOOD", {"mode": "test"}, {"value": "v"}, "mode"),
    ("GOOD", {}, {}, "value"),
    ("GOOD", {}, {"value": ""}, "value"),
    ("GOOD", {}, {"value": 5}, "value"),
    ("GOOD", {}, {"value": "v", "mode": "dev"}, "mode"),
])
async def test_bad_input_is_a_422_naming_the_field_and_writes_nothing(
        api: Api, path: str, params: dict[str, str], body: dict[str, Any], field: str) -> None:
    answer = await api.json("PUT", f"{SECRETS}/{path}", 422, params=params, json=body)
    assert answer["error"]["field"] == field
    assert (await api.json("GET", SECRETS, 200))["secrets"] == []


async def test_secrets_need_an_admin_key(api: Api) -> None:
    execute = await api.new_key("execute")
    for method, path in (("PUT", f"{SECRETS}/K"), ("GET", SECRETS), ("DELETE", f"{SECRETS}/K")):
        response = await api.request(method, path, json={"value": "v"}, token=execute)
        assert response.status == 403, method
    assert (await api.client.get(SECRETS)).status == 401
    assert (await api.json("GET", SECRETS, 200))["secrets"] == []


# --- resolution, redaction, modes ------------------------------------------------------------


async def test_a_flow_gets_the_value_and_shows_only_secret(api: Api, caplog: pytest.LogCaptureFixture,
                                                            settings: Any) -> None:
    await put_secret(api, "API_KEY", PROD_VALUE)
    await api.put_flow(echo_flow())
    task = await run(api, "uses-secret")
    assert task["status_name"] == "succeeded" and task["mode"] == "prod"
    assert task["result"] == {"text": "key=[secret]"}
    stored = await api.services.repo.get_task(task["id"])
    assert stored.nodes["say"].output == {"text": "key=[secret]"}
    assert_nowhere(PROD_VALUE, task, stored, [r.getMessage() for r in caplog.records])
    raw = Path(settings.database_url.split("///", 1)[1]).read_bytes()
    assert PROD_VALUE.encode() not in raw


async def test_an_error_carrying_the_value_shows_secret(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    await put_secret(api, "API_KEY", PROD_VALUE)
    await api.put_flow(echo_flow("fails", template="{{ {}[key] }}"))  # Jinja names the missing key: the value
    task = await run(api, "fails")
    assert task["status_name"] == "failed"
    assert "[secret]" in task["error"]["message"] and task["error"]["node_id"] == "say"
    assert_nowhere(PROD_VALUE, task, [(r.getMessage(), vars(r)) for r in caplog.records])


async def test_dev_gets_its_own_value_and_falls_back_to_prod(api: Api) -> None:
    await put_secret(api, "API_KEY", PROD_VALUE)
    await api.put_flow(echo_flow(template="{{ key[:8] }}"))  # the first 8 characters are not the secret
    fallback = await run(api, "uses-secret", {"mode": "dev"})
    assert fallback["result"] == {"text": "sk-prod-"}
    await put_secret(api, "API_KEY", DEV_VALUE, mode="dev")
    dev = await run(api, "uses-secret", {"mode": "dev"})
    assert dev["result"] == {"text": "sk-dev-b"} and dev["mode"] == "dev" and dev["data"]["mode"] == "dev"
    prod = await run(api, "uses-secret")
    assert prod["result"] == {"text": "sk-prod-"} and prod["mode"] == "prod" and "mode" not in prod["data"]
    ziggy = await run(api, "uses-secret", params={"executionEnvironmentMode": "DEV"})
    assert ziggy["result"] == {"text": "sk-dev-b"} and ziggy["mode"] == "dev"
    history = await api.json("GET", "/api/v1/tasks", 200, params={"mode": "dev"})
    assert [t["id"] for t in history["tasks"]] == [ziggy["id"], dev["id"], fallback["id"]]
    assert {t["mode"] for t in history["tasks"]} == {"dev"}
    prods = await api.json("GET", "/api/v1/tasks", 200, params={"mode": "prod"})
    assert {t["id"] for t in prods["tasks"]} >= {prod["id"]} and {t["mode"] for t in prods["tasks"]} == {"prod"}


@pytest.mark.parametrize(("params", "body", "field"), [
    ({"executionEnvironmentMode": "staging"}, {}, "executionEnvironmentMode"),
    ({}, {"mode": "DEV"}, "mode"),
    ({"executionEnvironmentMode": "prod"}, {"mode": "dev"}, "mode"),
])
async def test_a_bad_mode_is_a_422(api: Api, params: dict[str, str], body: dict[str, Any], field: str) -> None:
    answer = await api.execute("caption-image", body, status=422, params=params)
    assert answer["error"]["field"] == field
    assert (await api.json("GET", "/api/v1/tasks", 200))["tasks"] == []


async def test_history_refuses_an_unknown_mode(api: Api) -> None:
    answer = await api.json("GET", "/api/v1/tasks", 422, params={"mode": "staging"})
    assert answer["error"]["field"] == "mode"


async def test_the_mode_is_part_of_the_idempotency_fingerprint(api: Api) -> None:
    headers = {"Idempotency-Key": "order-7"}
    first = await api.execute("caption-image", {}, headers=headers)
    again = await api.execute("caption-image", {}, status=200, headers=headers)
    assert again["id"] == first["id"]
    conflict = await api.execute("caption-image", {}, status=409, headers=headers,
                                 params={"executionEnvironmentMode": "dev"})
    assert conflict["error"]["code"] == "idempotency_conflict"


async def test_a_request_may_not_name_a_secret(api: Api) -> None:
    await put_secret(api, "API_KEY", PROD_VALUE)
    await api.put_flow(echo_flow())
    body = {"node_settings": {"in": {"data": {"deep": [1, {"$secret": "API_KEY"}]}}}}
    answer = await api.execute("uses-secret", body, status=422)
    assert answer["error"] == {**answer["error"], "code": "secret_not_allowed",
                               "field": "node_settings.in.data.deep.1"}
    assert (await api.json("GET", "/api/v1/tasks", 200))["tasks"] == []


async def test_an_unknown_secret_is_a_422_naming_node_and_setting(api: Api) -> None:
    await api.put_flow(echo_flow())
    answer = await api.execute("uses-secret", {}, status=422)
    assert answer["error"]["code"] == "secret_unknown"
    assert answer["error"]["field"] == "node_settings.say.key"
    assert "'say'" in answer["error"]["message"] and "API_KEY" in answer["error"]["message"]
    await put_secret(api, "API_KEY", DEV_VALUE, mode="dev")  # dev only: prod still has none
    assert (await api.execute("uses-secret", {}, status=422))["error"]["code"] == "secret_unknown"
    assert (await api.json("GET", "/api/v1/tasks", 200))["tasks"] == []
    assert (await run(api, "uses-secret", {"mode": "dev"}))["result"] == {"text": "key=[secret]"}


async def test_only_the_flows_own_references_are_resolved(api: Api) -> None:
    """A ``$secret`` object arriving any other way (an upstream output over an edge) stays data."""
    await put_secret(api, "API_KEY", PROD_VALUE)
    await api.put_flow(echo_flow())
    task = await api.services.repo.get_task((await run(api, "uses-secret"))["id"])
    resolver = SecretResolver(api.services.repo, api.services.cipher)
    smuggled = {"$secret": "API_KEY"}
    params = {"template": "t", "key": {"$secret": "API_KEY"}, "unused": smuggled}
    resolved = await resolver.resolve(task, "say", Template, params)
    assert resolved.params == {"template": "t", "key": PROD_VALUE, "unused": smuggled}
    assert resolved.redact == {PROD_VALUE} and params["key"] == {"$secret": "API_KEY"}  # not changed in place
    overridden = await resolver.resolve(task, "say", Template, {"template": "t", "key": "plain"})
    assert overridden.params == {"template": "t", "key": "plain"} and overridden.redact == frozenset()


# --- the CLI ---------------------------------------------------------------------------------


def cli(*commands: tuple[tuple[str, ...], str], cwd: Path) -> list[subprocess.CompletedProcess[str]]:
    """Run ``(args, stdin)`` commands at once (each start-up costs ~1 s of imports)."""
    procs = [(subprocess.Popen(cli_command(*args), cwd=cwd, env=process_env(), stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True), stdin)
             for args, stdin in commands]
    outputs = [proc.communicate(stdin, timeout=60) for proc, stdin in procs]
    return [subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
            for (proc, _), (out, err) in zip(procs, outputs, strict=True)]


def test_the_cli_reads_the_value_from_stdin_and_never_prints_it(tmp_path: Path) -> None:
    db = ("--db", sqlite_url(tmp_path / "x.db"))
    [done] = cli((("secrets", "set", "API_KEY", *db), PROD_VALUE + "\n"), cwd=tmp_path)
    assert done.returncode == 0 and done.stdout == "set secret API_KEY (prod)\n", done.stderr
    dev, refused, empty = cli((("secrets", "set", "API_KEY", "--mode", "dev", *db), DEV_VALUE),
                              (("secrets", "set", "bad-name", *db), "v"),
                              (("secrets", "set", "EMPTY", *db), ""), cwd=tmp_path)
    assert dev.returncode == 0, dev.stderr
    assert refused.returncode == 1 and "not a secret name" in refused.stderr
    assert empty.returncode == 1 and "no value" in empty.stderr
    listed, deleted = cli((("secrets", "list", *db), ""), (("secrets", "delete", "API_KEY", "--mode", "dev", *db), ""),
                          cwd=tmp_path)
    assert listed.returncode == 0 and "API_KEY" in listed.stdout, listed.stderr
    assert deleted.returncode == 0, deleted.stderr
    with sqlite3.connect(tmp_path / "x.db") as conn:
        assert conn.execute("SELECT name, mode FROM secret").fetchall() == [("API_KEY", "prod")]
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("x.db"))
    assert (tmp_path / "graph_runtime.key").stat().st_mode & 0o777 == 0o600
    for output in (listed.stdout, listed.stderr, dev.stdout, deleted.stdout, raw.decode("latin-1")):
        assert PROD_VALUE not in output and DEV_VALUE not in output
