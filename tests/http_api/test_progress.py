"""The live table of `graph-runtime run`: the timeline shows which nodes ran at the same time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from graph_runtime.models import NodeRun, NodeStatus, Task, TaskRequest
from http_api.progress import BAR_WIDTH, timeline


def test_timeline_bars_overlap_for_concurrent_nodes_and_follow_for_sequential_ones() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)

    def run(node_id: str, start: float, end: float) -> NodeRun:
        return NodeRun(node_id, NodeStatus.SUCCEEDED, t0 + timedelta(seconds=start), t0 + timedelta(seconds=end))

    task = Task(1, "f", 1, TaskRequest("a", "d", "d"), nodes={
        "a": run("a", 0, 1), "b": run("b", 1, 3), "c": run("c", 1, 3), "d": run("d", 3, 4),
        "waiting": NodeRun("waiting")})
    bars = timeline(task)
    assert "waiting" not in bars
    assert bars["b"] == bars["c"], "concurrent nodes share a span"
    assert bars["a"].startswith("█") and bars["b"].startswith(" ")
    assert len(bars["d"]) <= BAR_WIDTH and bars["d"].rstrip().endswith("█")
    assert bars["d"].index("█") >= bars["b"].rindex("█"), "d starts after b ends"
