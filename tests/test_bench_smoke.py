"""The benchmark suite still runs end to end, so it cannot rot: tiny sizes, and no timing is asserted."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import cases
from tests.processes import ROOT, process_env

SCALE = "scale"  # server and worker processes on PostgreSQL: tests/test_bench_smoke_scale.py
EVENTS = "events"  # a server, a stream reader and load processes: tests/test_bench_smoke_events.py


@pytest.mark.timeout(180)
def test_the_bench_runs_every_case_at_smoke_size_and_writes_its_files(tmp_path: Path) -> None:
    out = tmp_path / "results"
    groups = [group for group in dict.fromkeys(c.group for c in cases.cases(cases.SMOKE)) if group not in (SCALE, EVENTS)]
    done = subprocess.run([sys.executable, "-m", "bench", "--smoke", "--no-prefect", "--out", str(out),
                           "--only", *groups], cwd=ROOT, env=process_env(), capture_output=True, text=True,
                          timeout=170, check=False)
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
