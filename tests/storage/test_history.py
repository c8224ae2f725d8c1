"""History pages: summaries that read no large column, and included parts under a byte budget."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from graph_runtime.flow import Flow
from graph_runtime.models import NodeRun, NodeStatus, RunError, TaskOutcome, TaskStatus
from nodes import codec
from storage.repository import Repository
from storage.task_history import HistoryPage
from tests.storage.conftest import make_request

SavedFlow = Callable[..., Awaitable[Flow]]
T0 = datetime(2026, 11, 23, 21, 14, 34, 800001, tzinfo=UTC)
BIG = "x" * 20_000  # what makes a task large here: ~20 KB in data, in the result and in node outputs
LARGE_COLUMNS = ("task.data", "task.result", "node_run.output", "task.*")


@contextmanager
def statements() -> Iterator[list[str]]:
    """Every SQL statement any engine of this process sends while the block runs."""
    sent: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        sent.append(statement)

    sa.event.listen(sa.engine.Engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", record)


async def add_task(repo: Repository, flow_id: str = "demo", *, big: bool = True, end: TaskStatus | None = None,
                   error: RunError | None = None) -> int:
    """A task with data, node runs with outputs and (if ``end``) a result; all large if ``big``."""
    text = BIG if big else "small"
    task, _ = await repo.create_task(flow_id, 1, make_request(text=text), node_ids=["start", "end"])
    if end is not None:
        started = T0 + timedelta(seconds=task.id)
        await repo.claim_task(task.id)
        start = NodeRun("start", NodeStatus.SUCCEEDED, started, started, 0.0, 0.0, 1, None, {"text": text})
        later = started + timedelta(milliseconds=1)
        last = NodeRun("end", NodeStatus.FAILED if error else NodeStatus.SUCCEEDED, later, later, 0.0, 0.0, 1,
                       error, None if error else {"text": text})
        result = None if error else {"echo": text}
        await repo.finish_task(task.id, TaskOutcome(end, started, 0.5, 0.25, result=result, error=error),
                               [start, last])
    return task.id


def included_bytes(page: HistoryPage) -> list[int]:
    """Per task, the JSON bytes of its data and result."""
    return [len(codec.dumps(t.request.as_data() if t.request else None)) + len(codec.dumps(t.result))
            for t in page.tasks]


async def test_summaries_read_no_large_column_and_count_nodes(repo: Repository, saved_flow: SavedFlow) -> None:
    await saved_flow()
    queued = await add_task(repo)
    failure = RunError("node_failed", "boom", "end")
    failed = await add_task(repo, end=TaskStatus.FAILED, error=failure)
    succeeded = await add_task(repo, end=TaskStatus.SUCCEEDED)

    with statements() as sent:
        page = await repo.task_history(limit=10, budget_bytes=1)
    assert sent and not [s for s in sent if any(column in s for column in LARGE_COLUMNS)], sent
    assert [t.id for t in page.tasks] == [succeeded, failed, queued] and page.next_before is None
    assert page.include == frozenset()
    by_id = {t.id: t for t in page.tasks}
    assert all(t.request is None and t.result is None and t.nodes is None for t in page.tasks)
    assert by_id[queued].node_counts == {**dict.fromkeys(NodeStatus, 0), NodeStatus.PENDING: 2}
    assert by_id[failed].node_counts[NodeStatus.FAILED] == 1 and by_id[failed].error == failure
    assert by_id[succeeded].node_counts[NodeStatus.SUCCEEDED] == 2
    assert list(by_id[succeeded].node_counts) == list(NodeStatus)
    whole = await repo.get_task(succeeded)
    fields = ("flow_id", "revision", "status", "created", "started", "finished", "execution_time",
              "execution_cost", "error")
    assert [getattr(by_id[succeeded], f) for f in fields] == [getattr(whole, f) for f in fields]


async def test_included_parts_page_under_the_budget_and_every_task_comes_once(
        repo: Repository, saved_flow: SavedFlow) -> None:
    await saved_flow()
    ids = [await add_task(repo, end=TaskStatus.SUCCEEDED if i % 3 else None) for i in range(11)]
    budget = 70_000  # two or three tasks of ~20-40 KB
    seen: list[int] = []
    before, pages = None, 0
    while True:
        page = await repo.task_history(limit=5, before=before, include=["data", "result"], budget_bytes=budget)
        pages += 1
        sizes = included_bytes(page)
        assert 1 <= len(page.tasks) <= 5 and (sum(sizes) <= budget or len(sizes) == 1), sizes
        for task in page.tasks:
            whole = await repo.get_task(task.id)
            assert (task.request, task.result, task.status) == (whole.request, whole.result, whole.status)
        seen += [t.id for t in page.tasks]
        if page.next_before is None:
            break
        assert page.next_before == page.tasks[-1].id
        before = page.next_before
    assert seen == ids[::-1] and pages >= 4


async def test_the_budget_is_measured_as_the_json_the_page_carries(repo: Repository, saved_flow: SavedFlow) -> None:
    await saved_flow()
    ids = [await add_task(repo, end=TaskStatus.SUCCEEDED) for _ in range(3)]
    everything = await repo.task_history(include=["data", "result"], budget_bytes=10**9)
    sizes = included_bytes(everything)
    exact = await repo.task_history(include=["data", "result"], budget_bytes=sizes[0] + sizes[1])
    assert [t.id for t in exact.tasks] == ids[:0:-1] and exact.next_before == ids[1]
    one_short = await repo.task_history(include=["data", "result"], budget_bytes=sizes[0] + sizes[1] - 1)
    assert [t.id for t in one_short.tasks] == [ids[2]] and one_short.next_before == ids[2]


async def test_a_task_larger_than_the_budget_comes_alone(repo: Repository, saved_flow: SavedFlow) -> None:
    await saved_flow()
    ids = [await add_task(repo, end=TaskStatus.SUCCEEDED) for _ in range(2)]
    first = await repo.task_history(include=["data"], budget_bytes=1)
    assert [t.id for t in first.tasks] == [ids[1]] and first.tasks[0].request is not None
    assert first.tasks[0].result is None and first.next_before == ids[1]
    last = await repo.task_history(include=["data"], budget_bytes=1, before=first.next_before)
    assert [t.id for t in last.tasks] == [ids[0]] and last.next_before is None


async def test_included_nodes_come_without_outputs_in_start_order(repo: Repository, saved_flow: SavedFlow) -> None:
    await saved_flow()
    task_id = await add_task(repo, end=TaskStatus.SUCCEEDED)
    queued = await add_task(repo)
    with statements() as sent:
        page = await repo.task_history(include=["nodes"], budget_bytes=10**6)
    assert not [s for s in sent if any(column in s for column in LARGE_COLUMNS)], sent
    by_id = {t.id: t for t in page.tasks}
    whole = await repo.get_task(task_id)
    nodes, pending = by_id[task_id].nodes, by_id[queued].nodes
    assert nodes is not None and list(nodes) == list(whole.nodes) == ["start", "end"]
    for node_id, run in nodes.items():
        assert run.output is None and run == dataclasses.replace(whole.nodes[node_id], output=None)
    assert pending is not None and set(pending) == {"start", "end"}
    assert by_id[task_id].request is None and by_id[task_id].result is None


async def test_filters_and_pages_hold_for_summaries_and_included_parts(
        repo: Repository, saved_flow: SavedFlow) -> None:
    await saved_flow("a")
    await saved_flow("b")
    ids = [await add_task(repo, flow_id, big=False, end=TaskStatus.SUCCEEDED if i % 2 else None)
           for i, flow_id in enumerate("ababa")]
    for include in ((), ("data", "result", "nodes")):
        async def listed(include: tuple[str, ...] = include, **query: Any) -> list[int]:
            return [t.id for t in (await repo.task_history(include=include, budget_bytes=10**6, **query)).tasks]

        assert await listed() == ids[::-1]
        assert await listed(flow_id="a") == [ids[4], ids[2], ids[0]]
        assert await listed(status=TaskStatus.SUCCEEDED) == [ids[3], ids[1]]
        assert await listed(flow_id="b", status=TaskStatus.QUEUED) == []
        assert await listed(flow_id="a", status=TaskStatus.QUEUED, before=ids[4]) == [ids[2], ids[0]]
        assert await listed(flow_id="nope") == []
    # next_before is null exactly when nothing is left, even on a full page.
    assert (await repo.task_history(limit=5, budget_bytes=0)).next_before is None
    assert (await repo.task_history(limit=4, budget_bytes=0)).next_before == ids[1]


async def test_unknown_parts_are_refused(repo: Repository) -> None:
    with pytest.raises(ValueError, match="outputs"):
        await repo.task_history(include=["outputs"], budget_bytes=1)
