"""The benchmark suite still runs end to end, so it cannot rot: tiny sizes, and no timing is asserted."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import cases, scale
from tests import pg
from tests.processes import ROOT, process_env

SCALE = "scale"  # server and worker processes on PostgreSQL: a test of its own (below), with a longer deadline
EVENTS = "events"  # a server, a stream reader and load processes: a test of its own (below)


def test_the_bench_runs_every_case_at_smoke_size_and_writes_its_files(tmp_path: Path) -> None:
    out = tmp_path / "results"
    groups = [group for group in dict.fromkeys(c.group for c in cases.cases(cases.SMOKE)) if group not in (SCALE, EVENTS)]
    done = subprocess.run([sys.executable, "-m", "bench", "--smoke", "--no-prefect", "--out", str(out),
                           "--only", *groups], cwd=ROOT, env=process_env(), capture_output=True, text=True,
                          timeout=55, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    expected = [case.name for case in cases.cases(cases.SMOKE) if case.group not in (SCALE, EVENTS)]
    document = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert [row["case"] for row in document["rows"] if row["metric"] != "p99 ms"] == expected
    for row in document["rows"]:
        ours = row["figures"]["graph-runtime"]
        assert ours["runs"] >= 1 and ours["median"] > 0, row
        assert any(name in row["figures"] for name in ("floor", "naive durable")), f"{row['case']} has no reference"
    assert all(name in done.stdout for name in expected), done.stdout
    assert "| case |" in (out / "results.md").read_text(encoding="utf-8")
    if importlib.util.find_spec("matplotlib") is not None:
        assert (out / "results.png").read_bytes().startswith(b"\x89PNG")
    else:
        assert "chart" in document["skipped"]


@pytest.mark.timeout(600)
def test_the_scale_cases_run_at_smoke_size(tmp_path: Path) -> None:
    """PostgreSQL chain and DBOS, 1 → N workers, enqueue → start, serve --processes 2 (SQLite and PostgreSQL)."""
    user, why = asyncio.run(pg.find_user())
    if user is None:
        pytest.skip(f"no PostgreSQL at {pg.PG_HOST}: {why}")
    out = tmp_path / "results"
    done = subprocess.run([sys.executable, "-m", "bench", "--smoke", "--out", str(out), "--only", SCALE], cwd=ROOT,
                          env=process_env(), capture_output=True, text=True, timeout=580, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    document = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert [row["case"] for row in document["rows"]] == [c.name for c in cases.cases(cases.SMOKE) if c.group == SCALE]
    for row in document["rows"]:
        assert row["figures"]["graph-runtime"]["median"] > 0, row
        references = {"floor", "naive durable", scale.ONE_PROCESS, scale.ONE_WORKER}
        assert references & row["figures"].keys(), f"{row['case']} has no same-run reference"
        assert row["targets"] and all(target["value"] is not None for target in row["targets"]
                                      if "DBOS" not in target["text"] or importlib.util.find_spec("dbos")), row


def test_the_callbacks_case_runs_at_smoke_size(tmp_path: Path) -> None:
    """Signed deliveries to a local receiver through the real dispatcher, beside plain POSTs of the same bodies."""
    out = tmp_path / "results"
    done = subprocess.run([sys.executable, "-m", "bench", "--smoke", "--no-prefect", "--out", str(out),
                           "--only", "callbacks"], cwd=ROOT, env=process_env(), capture_output=True, text=True,
                          timeout=55, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    [row] = json.loads((out / "results.json").read_text(encoding="utf-8"))["rows"]
    assert row["case"] == "callbacks" and row["metric"] == "deliveries/s"
    assert row["figures"]["graph-runtime"]["median"] > 0 and row["figures"]["floor"]["median"] > 0
    assert row["targets"][0]["value"] is not None


@pytest.mark.timeout(240)
def test_the_events_cases_run_at_smoke_size(tmp_path: Path) -> None:
    """The chain with the events hub and without; chain flows/s beside open event streams read by another process."""
    out = tmp_path / "results"
    done = subprocess.run([sys.executable, "-m", "bench", "--smoke", "--no-prefect", "--out", str(out),
                           "--only", EVENTS], cwd=ROOT, env=process_env(), capture_output=True, text=True,
                          timeout=220, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    overhead, streams = json.loads((out / "results.json").read_text(encoding="utf-8"))["rows"]
    assert (overhead["case"], overhead["metric"]) == ("events-overhead", "ms/flow")
    assert overhead["extra"]["events_per_flow"] >= 10  # a chain with the hub stored its events (one without: none)
    assert (streams["case"], streams["metric"]) == ("events-streams", "flows/s")
    # Every stream got every live event and the task's last one, and each was timed.
    assert streams["extra"]["streams_complete"] == [cases.SMOKE.event_streams] * len(streams["extra"]["streams_complete"])
    assert streams["extra"]["live_events_received"] > 0
    assert overhead["figures"]["graph-runtime"]["median"] > 0 and overhead["figures"]["floor"]["median"] > 0
    for row in (overhead, streams):
        assert row["figures"]["graph-runtime"]["runs"] == row["figures"]["floor"]["runs"] >= 1, row
        assert row["targets"] and all(target["value"] is not None for target in row["targets"]), row
