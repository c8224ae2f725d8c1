"""Node runs are listed in one order on every database, whatever its collation."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

from graph_runtime.models import NodeRun, NodeStatus, Task, TaskRequest, in_start_order
from storage import convert


def row(task_id: int, node_id: str, started: datetime | None) -> SimpleNamespace:
    return SimpleNamespace(task_id=task_id, node_id=node_id, status="succeeded" if started else "skipped",
                           started=started, finished=None, execution_time=None, cost=None, attempts=0,
                           error=None, output=None, cached=False, saved_cost=None, items=None, waiting_for_pool=None)


def test_runs_are_ordered_by_start_then_id_in_code_points_not_the_rows_order() -> None:
    t1, t2 = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC)
    # As an en-US collation would return unstarted ids: case and "_" ignored.
    rows = [row(1, "late", t2), row(1, "early", t1), row(1, "_x", None), row(1, "alpha", None), row(1, "Beta", None)]
    grouped = convert.node_runs_by_task(rows)
    assert list(grouped[1]) == ["early", "late", "Beta", "_x", "alpha"]


def test_a_wait_answer_lists_its_runs_as_the_store_does() -> None:
    t1 = datetime(2026, 1, 1, tzinfo=UTC)
    runs = [NodeRun("alpha", NodeStatus.SKIPPED), NodeRun("s", NodeStatus.SUCCEEDED, started=t1),
            NodeRun("Beta", NodeStatus.SKIPPED)]
    task = Task(1, "f", 1, TaskRequest("s", "alpha", "alpha"), nodes={r.node_id: r for r in runs})
    stored = convert.node_runs_by_task([row(1, r.node_id, r.started) for r in runs])[1]
    assert list(in_start_order(task).nodes) == list(stored) == ["s", "Beta", "alpha"]
