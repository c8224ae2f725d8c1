"""The ``graph-runtime`` command, run as a person runs it: a child process in a scratch directory."""

from __future__ import annotations

import base64
import re
import signal
from pathlib import Path

import pytest

from tests.processes import (
    ROOT,
    SAMPLE_FLOWS,
    last_json_line,
    run_cli,
    run_cli_concurrently,
    sample_flow_ids,
    serving,
    sqlite_url,
    wait_until,
)

CAPTION_LONG = "Describe the image at https://example.com/cat.jpg in a long sentence."

BROKEN_FLOW = """\
id: broken
nodes:
  - {id: twice, type: start}
  - {id: twice, type: end}
  - {id: mystery, type: no-such-type}
  - {id: ping, type: template, settings: {template: "{{ x }}"}}
  - {id: pong, type: template, settings: {template: "{{ y }}"}}
edges:
  - {from: ping, output: text, to: pong, input: y}
  - {from: pong, output: text, to: ping, input: x}
"""


@pytest.fixture
def db(tmp_path: Path) -> list[str]:
    """``--db`` for a fresh SQLite file in the test's scratch directory."""
    return ["--db", sqlite_url(tmp_path / "x.db")]


@pytest.fixture
def flows() -> list[str]:
    return ["--flows", str(SAMPLE_FLOWS)]


def assert_clean_failure(stderr: str) -> None:
    assert "Traceback" not in stderr, stderr


# --- serve -------------------------------------------------------------------------------------


def test_serve_prints_a_first_admin_key_once_and_it_lists_the_sample_flows(
        tmp_path: Path, db: list[str], flows: list[str]) -> None:
    with serving(*db, *flows, cwd=tmp_path) as server:
        assert len(server.keys_printed) == 1, server.stdout
        token = server.keys_printed[0]
        status, body = server.request("GET", "/api/v1/flows", token=token)
        assert status == 200, body
        assert {flow["id"] for flow in body["flows"]} == sample_flow_ids()
        assert server.request("GET", "/api/v1/flows")[0] == 401
        assert server.stop(signal.SIGINT) == 0, server.describe()
        assert_clean_failure(server.stderr)

    with serving(*db, *flows, cwd=tmp_path) as again:
        assert again.keys_printed == [], again.stdout
        assert "GRAPH_RUNTIME_KEY" not in again.stdout
        assert again.request("GET", "/api/v1/flows", token=token)[0] == 200
        assert again.stop(signal.SIGINT) == 0, again.describe()


def test_serve_prints_no_key_when_the_database_already_has_one(
        tmp_path: Path, db: list[str], flows: list[str]) -> None:
    created = run_cli("keys", "create", "ops", *db, cwd=tmp_path)  # no --scope: execute (SPEC §6)
    assert created.returncode == 0, created.stderr
    token = created.stdout.splitlines()[-1]

    with serving(*db, *flows, cwd=tmp_path) as server:
        assert server.keys_printed == [], server.stdout
        assert server.request("GET", "/api/v1/flows", token=token)[0] == 200
        assert server.request("GET", "/api/v1/keys", token=token)[0] == 403  # execute, not admin


@pytest.mark.parametrize(("grace", "resize_attempts"), [("0", 2), ("10", 1)], ids=["no-grace", "grace"])
def test_sigterm_with_a_task_running_exits_0_and_the_next_start_resumes_it(
        tmp_path: Path, db: list[str], flows: list[str], grace: str, resize_attempts: int) -> None:
    # With a grace period the running node (resize, 1.5 s) finishes before the exit and is not
    # run again; without one it is interrupted, runs again after the restart, and both tries count.
    with serving(*db, *flows, "--shutdown-grace-s", grace, cwd=tmp_path) as server:
        token = server.keys_printed[0]
        status, task = server.request("POST", "/api/v1/flow/fan-out-fan-in/execute", token=token,
                                      body={"node_settings": {"resize": {"seconds": 1.5}}})
        assert status == 201, task

        def branches_done() -> bool:
            nodes = server.request("GET", f"/api/v1/task/{task['id']}", token=token)[1]["nodes"]
            return bool(nodes) and nodes["transcribe"]["status"] == nodes["thumbnail"]["status"] == "succeeded"

        wait_until(branches_done, timeout=10, what="the short branches succeed")
        assert server.stop(signal.SIGTERM) == 0, server.describe()
        assert_clean_failure(server.stderr)

    with serving(*db, *flows, cwd=tmp_path) as again:

        def ended() -> dict | None:
            body = again.request("GET", f"/api/v1/task/{task['id']}", token=token)[1]
            return body if body["status"] >= 3 else None

        done = wait_until(ended, timeout=15, interval=0.1, what="the resumed task ends")
        assert done["status"] == 3, done
        assert done["nodes"]["transcribe"]["attempts"] == 1  # succeeded before the stop: not run again
        assert done["nodes"]["resize"]["attempts"] == resize_attempts, done["nodes"]
        assert again.stop(signal.SIGTERM) == 0, again.describe()


def test_serve_on_an_unusable_database_fails_with_an_error_line(tmp_path: Path, flows: list[str]) -> None:
    # `keys list --db mysql://…` answers "error: unsupported database …"; serve should too.
    result = run_cli("serve", "--port", "1", "--db", "mysql://nobody@127.0.0.1/x", *flows, cwd=tmp_path)
    assert result.returncode == 1
    assert any(line.startswith("error: unsupported database") for line in result.stderr.splitlines()), result.stderr
    assert_clean_failure(result.stderr)


# --- keys --------------------------------------------------------------------------------------


def _key_line(listing: str, kid: str) -> str:
    lines = [line for line in listing.splitlines() if kid in line]
    assert len(lines) == 1, listing
    return lines[0]


def test_keys_create_list_and_revoke(tmp_path: Path, db: list[str]) -> None:
    created = run_cli("keys", "create", "ci-job", "--scope", "execute", *db, cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    token = created.stdout.splitlines()[-1]
    assert token == token.strip() and " " not in token
    kid, secret = base64.b64decode(token, validate=True).decode().split(":", 1)
    assert len(secret) >= 32

    listed = run_cli("keys", "list", *db, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    line = _key_line(listed.stdout, kid).split()
    assert "ci-job" in line and "execute" in line and "revoked" not in line
    assert token not in listed.stdout and secret not in listed.stdout

    revoked = run_cli("keys", "revoke", kid, *db, cwd=tmp_path)
    assert revoked.returncode == 0, revoked.stderr
    after = run_cli("keys", "list", *db, cwd=tmp_path)
    assert "revoked" in _key_line(after.stdout, kid).split()


def test_revoking_an_unknown_key_fails_with_a_message(tmp_path: Path, db: list[str]) -> None:
    result = run_cli("keys", "revoke", "k-no-such-key", *db, cwd=tmp_path)
    assert result.returncode == 1
    assert "k-no-such-key" in result.stderr
    assert_clean_failure(result.stderr)


def test_flags_win_over_environment_variables(tmp_path: Path) -> None:
    from_env, from_flag = tmp_path / "env.db", tmp_path / "flag.db"
    env = {"GRAPH_RUNTIME_DATABASE_URL": sqlite_url(from_env)}
    flagged = run_cli("keys", "create", "flagged", "--db", sqlite_url(from_flag), cwd=tmp_path, env=env)
    assert flagged.returncode == 0, flagged.stderr
    assert from_flag.is_file() and not from_env.exists()
    unflagged = run_cli("keys", "create", "unflagged", cwd=tmp_path, env=env)
    assert unflagged.returncode == 0, unflagged.stderr
    assert from_env.is_file() and not (tmp_path / "graph_runtime.db").exists()


def test_an_invalid_setting_fails_with_an_error_line_naming_it(tmp_path: Path) -> None:
    result = run_cli("keys", "list", "--db", sqlite_url(tmp_path / "x.db"), cwd=tmp_path,
                     env={"GRAPH_RUNTIME_MAX_CONCURRENT_JOBS": "lots"})
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors and "max_concurrent_jobs" in errors[0].lower(), result.stderr
    assert_clean_failure(result.stderr)


# --- flows -------------------------------------------------------------------------------------


def test_flows_validate_accepts_the_sample_flows() -> None:
    paths = sorted(str(path.relative_to(ROOT)) for path in SAMPLE_FLOWS.iterdir())
    result = run_cli("flows", "validate", *paths, cwd=ROOT)  # as in README: from the repository root
    assert result.returncode == 0, result.stdout + result.stderr
    for path in paths:
        assert f"{path}: ok" in result.stdout


def test_flows_validate_reports_every_problem_and_exits_1(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(BROKEN_FLOW, encoding="utf-8")
    good = SAMPLE_FLOWS / "caption-image.yaml"

    result = run_cli("flows", "validate", str(broken), str(good), cwd=tmp_path)

    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{good}: ok" in result.stdout
    report = result.stdout.split(f"{good}:")[0]
    assert "INVALID" in report
    problems = [line for line in report.splitlines() if line.lstrip().startswith("- ")]
    assert len(problems) >= 3, report
    assert any("'twice'" in p for p in problems), report  # the duplicate id
    assert any("no-such-type" in p for p in problems), report  # the unknown type
    assert any("cycle" in p and "ping" in p and "pong" in p for p in problems), report
    assert_clean_failure(result.stderr)


def test_flows_validate_reports_unreadable_files(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("id: [unclosed\n", encoding="utf-8")
    # Through ``python -m http_api.cli``, which must behave like the console script.
    result = run_cli("flows", "validate", "bad.yaml", "missing.yaml", cwd=tmp_path, module=True)
    assert result.returncode == 1
    assert "bad.yaml: INVALID" in result.stdout and "missing.yaml: INVALID" in result.stdout
    assert_clean_failure(result.stderr)


def test_flows_list_lists_the_sample_flows(tmp_path: Path, db: list[str], flows: list[str]) -> None:
    result = run_cli("flows", "list", *db, *flows, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    listed = {line.split()[0] for line in result.stdout.splitlines() if line.strip()}
    assert listed == sample_flow_ids()


# --- run ---------------------------------------------------------------------------------------


def test_run_prints_the_succeeded_task_as_the_last_line(tmp_path: Path, db: list[str], flows: list[str]) -> None:
    result = run_cli("run", "caption-image", "--set", "SYnn-start.data.style=long", *db, *flows, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    task = last_json_line(result.stdout)
    assert task["status"] == 3 and task["status_name"] == "succeeded"
    assert task["result"]["caption"] == CAPTION_LONG
    assert task["data"]["node_settings"] == {"SYnn-start": {"data": {"style": "long"}}}
    # Created running under the CLI's own claim: never queued, where a server's worker on the same
    # database could have taken it first.
    assert task["started"] == task["created"]


def test_run_of_an_impossible_selection_fails_with_a_clear_message(
        tmp_path: Path, db: list[str], flows: list[str]) -> None:
    result = run_cli("run", "two-starts-two-ends", "--start", "card", "--end", "lang-end", *db, *flows,
                     cwd=tmp_path)
    assert result.returncode != 0
    message = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert message and "card" in message[0] and "lang-end" in message[0] and "upstream" in message[0], result.stderr
    assert_clean_failure(result.stderr)


BAD_RUNS = {  # arguments → words the error line must name
    ("no-such-flow",): ["no-such-flow"],
    ("caption-image", "--set", "nonsense"): ["nonsense"],
    ("two-starts-two-ends",): ["text-start", "lang-start"],
}


def test_run_rejects_bad_requests_with_an_error_line(tmp_path: Path, flows: list[str]) -> None:
    commands = []
    for number, args in enumerate(BAD_RUNS):
        (tmp_path / str(number)).mkdir()
        commands.append((["run", *args, "--db", sqlite_url(tmp_path / str(number) / "x.db"), *flows],
                         tmp_path / str(number)))
    for (args, names), result in zip(BAD_RUNS.items(), run_cli_concurrently(commands), strict=True):
        assert result.returncode == 1, (args, result.stderr)
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert errors and all(name in errors[0] for name in names), (args, result.stderr)
        assert result.stdout == "", args
        assert_clean_failure(result.stderr)


def test_run_of_a_failing_task_exits_1_and_prints_the_failed_task(
        tmp_path: Path, db: list[str], flows: list[str]) -> None:
    result = run_cli("run", "1607", "--set", "check.condition=false", *db, *flows, cwd=tmp_path)
    assert result.returncode == 1
    task = last_json_line(result.stdout)
    assert task["status"] == 4 and task["result"] is None
    assert task["error"] == {"node_id": "check", "code": "guard_failed", "message": "text is empty"}


def test_run_shows_progress_of_every_node_on_stderr(tmp_path: Path, db: list[str], flows: list[str]) -> None:
    result = run_cli("run", "fan-out-fan-in", *db, *flows, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for node_id in ("start", "resize", "transcribe", "thumbnail", "join", "end"):  # a row per node
        assert re.search(rf"^\W*{node_id}\W+succeeded\b", result.stderr, re.MULTILINE), result.stderr
    task = last_json_line(result.stdout)  # the table stays off stdout: its last line is the task
    assert task["status"] == 3
    assert set(task["nodes"]) == {"start", "resize", "transcribe", "thumbnail", "join", "end"}


def test_run_records_the_task_like_any_other(tmp_path: Path, db: list[str], flows: list[str]) -> None:
    ran = run_cli("run", "caption-image", *db, *flows, cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    task = last_json_line(ran.stdout)

    with serving(*db, *flows, cwd=tmp_path) as server:
        token = server.keys_printed[0]  # `run` creates no key
        status, stored = server.request("GET", f"/api/v1/task/{task['id']}", token=token)
        assert status == 200, stored
        assert stored["status"] == 3 and stored["result"] == task["result"]
        status, history = server.request("GET", "/api/v1/tasks?flow_id=caption-image", token=token)
        assert [t["id"] for t in history["tasks"]] == [task["id"]]
