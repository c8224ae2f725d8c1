"""LOG_FORMAT=json: every line a JSON object, the action and ids as fields, server keys still masked."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

from http_api.json_logs import JsonFormatter
from http_api.redaction import RedactSecrets
from tests.processes import SAMPLE_FLOWS, serving, sqlite_url, wait_until


def json_lines(stderr: str) -> list[dict[str, Any]]:
    lines = [line for line in stderr.splitlines() if line.strip()]
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"not a JSON line: {line!r}") from None
    return parsed


def test_serve_writes_one_json_object_per_line_with_actions_and_ids(tmp_path: Path) -> None:
    args = ("--db", sqlite_url(tmp_path / "x.db"), "--flows", str(SAMPLE_FLOWS), "--log-format", "json")
    with serving(*args, cwd=tmp_path) as server:
        token = server.keys_printed[0]
        status, task = server.request("POST", f"/api/v1/flow/branch-greeting/execute?wait=10&execution-key={token}",
                                      body={})
        assert status in (200, 201), task
        assert task["status_name"] == "succeeded", task
        wait_until(lambda: '"http_request"' in server.stderr, timeout=5, what="the access log line")
        server.stop()
    lines = json_lines(server.stderr)
    assert lines and all({"time", "level", "logger", "message"} <= set(line) for line in lines), lines
    queued = [line for line in lines if line.get("action") == "task_queued"]
    assert queued == [{**queued[0], "task_id": task["id"], "flow_id": "branch-greeting", "revision": 1}], queued
    assert queued[0]["level"] == "INFO" and queued[0]["logger"] == "http_api.services"
    access = [line for line in lines if line.get("action") == "http_request"]
    assert any("/execute" in line["message"] and line.get("status") in (200, 201) for line in access), access
    secret = token.split(":")[-1]
    assert token not in server.stderr and secret not in server.stderr  # masked in JSON too
    assert any("execution-key=***" in line["message"] for line in access), access


def test_a_traceback_and_odd_extras_stay_inside_one_line() -> None:
    handler_filter, formatter = RedactSecrets(), JsonFormatter()
    try:
        raise ValueError("bad\nthing Authorization: Basic c2VjcmV0a2V5c2VjcmV0a2V5c2VjcmV0")
    except ValueError:
        record = logging.LogRecord("graph_runtime.executor", logging.ERROR, __file__, 1, "task %s crashed", (7,),
                                   sys.exc_info())
    record.action, record.task_id, record.where = "task_internal_error", 7, Path("/x")
    assert handler_filter.filter(record)
    text = formatter.format(record)
    assert "\n" not in text
    line = json.loads(text)
    assert line["message"] == "task 7 crashed" and line["action"] == "task_internal_error" and line["task_id"] == 7
    assert line["where"] == "/x"
    assert "ValueError" in line["exc"] and "c2VjcmV0a2V5" not in line["exc"]
