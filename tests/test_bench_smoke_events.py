"""The benchmark suite still runs end to end, so it cannot rot: tiny sizes, and no timing is asserted.

The events group on its own file, so that pytest-xdist can run it beside the other bench smoke tests.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import cases
from tests.processes import ROOT, process_env

EVENTS = "events"


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


@pytest.mark.timeout(60)
def test_the_counted_chain_process_runs_with_the_hub_and_without() -> None:
    """What ``python -m bench.events count`` runs under valgrind (valgrind itself takes a minute a
    process, too long for the suite): a few chains with the hub and without."""
    for hub in ("on", "off"):
        done = subprocess.run([sys.executable, "-m", "bench.events", "chains", hub, "2"], cwd=ROOT, env=process_env(),
                              capture_output=True, text=True, timeout=50, check=False)
        assert done.returncode == 0, done.stderr[-3000:]
