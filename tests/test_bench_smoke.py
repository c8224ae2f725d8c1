"""The benchmark suite still runs end to end, so it cannot rot: tiny sizes, and no timing is asserted."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

from bench import cases
from tests.processes import ROOT, process_env


def test_the_bench_runs_every_case_at_smoke_size_and_writes_its_files(tmp_path: Path) -> None:
    out = tmp_path / "results"
    done = subprocess.run([sys.executable, "-m", "bench", "--smoke", "--no-prefect", "--out", str(out)], cwd=ROOT,
                          env=process_env(), capture_output=True, text=True, timeout=55, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    expected = [case.name for case in cases.cases(cases.SMOKE)]
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
