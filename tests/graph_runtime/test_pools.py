"""Pools (SPEC §10): a node naming a pool runs only on a worker serving it, the rest of its task
runs on any worker, and a task waiting for a pool nobody serves stays running with that node
pending and ``waiting_for_pool``. Two schedulers (two workers) on one real SQLite file."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from graph_runtime.executor import Executor
from graph_runtime.flow import parse
from graph_runtime.models import NodeStatus, Task, TaskRequest, TaskStatus
from graph_runtime.scheduler import Scheduler
from nodes.registry import Registry
from storage import engine as storage_engine
from storage.repository import Repository
from tests.support import Echo, FlowBuilder, eventually, registry_with_test_types


class GpuEcho(Echo):
    """A node type that names its pool itself (a model that needs the GPU box)."""

    type = "test.gpu_echo"
    pool = "gpu"


def _registry() -> Registry:
    registry = registry_with_test_types()
    registry.register(GpuEcho)
    return registry


def _chain(flow_id: str, *, pool: str | None = "gpu", node_type: str = "test.echo") -> Any:
    builder = FlowBuilder(flow_id).node("s", "start", data={"x": 1}).node("a", node_type).node("e", "end")
    definition = builder.edge("s", "a", input="v").edge("a", "e").build()
    if pool is not None:
        definition["nodes"][1]["pool"] = pool
    return parse(definition)


def _diamond() -> Any:
    """s feeds a (gpu) and b (any worker); e waits for both."""
    definition = (FlowBuilder("diamond").node("s", "start", data={"x": 1}).node("a", "test.echo")
                  .node("b", "test.echo").node("e", "end")
                  .edge("s", "a", input="v").edge("s", "b", input="v")
                  .edge("a", "e", input="a").edge("b", "e", input="b").build())
    definition["nodes"][1]["pool"] = "gpu"
    return parse(definition)


def _map_of_gpu_items() -> Any:
    definition = (FlowBuilder("gpu-map").node("s", "start", data={"items": [1, 2, 3]})
                  .node("m", "map", node={"type": "test.gpu_echo"}).node("e", "end")
                  .edge("s", "m", output="items", input="items").edge("m", "e").build())
    return parse(definition)


@pytest.fixture
async def repo(db_url: str) -> AsyncIterator[Repository]:
    engine = storage_engine.create_engine(db_url)
    repository = Repository(engine)
    for flow in (_chain("chain"), _chain("typed", pool=None, node_type="test.gpu_echo"), _diamond(),
                 _map_of_gpu_items()):
        await repository.save_flow(flow)
    yield repository
    await storage_engine.dispose(engine)


def _worker(repo: Repository, name: str, pools: frozenset[str], registry: Registry) -> Scheduler:
    return Scheduler(repo, Executor(repo, registry, pools=pools), poll_interval_s=0.05, lease_s=5.0,
                     worker_id=name, pools=pools)


async def _waiting(repo: Repository, task_id: int, node_id: str) -> Task | None:
    task = await repo.get_task(task_id)
    run = task.nodes.get(node_id)
    return task if run is not None and run.waiting_for_pool is not None else None


async def _ended(repo: Repository, task_id: int) -> Task | None:
    task = await repo.get_task(task_id)
    return task if task.status.ended else None


async def _run_until_waiting(repo: Repository, flow_id: str, node_id: str) -> tuple[Task, Scheduler]:
    registry = _registry()
    task, _ = await repo.create_task(flow_id, 1, TaskRequest("s", "e", "e"))
    cpu = _worker(repo, "cpu-box", frozenset(), registry)
    await cpu.start()
    waiting = await eventually(lambda: _waiting(repo, task.id, node_id))
    return waiting, cpu


@pytest.mark.parametrize(("flow_id", "node_id"), [("chain", "a"), ("typed", "a"), ("gpu-map", "m")],
                         ids=["node-names-pool", "type-names-pool", "map-of-pooled-type"])
async def test_a_pooled_node_waits_for_its_pool_then_runs_there(repo: Repository, flow_id: str,
                                                                 node_id: str) -> None:
    waiting, cpu = await _run_until_waiting(repo, flow_id, node_id)
    try:
        # The worker without the pool ran what it could and let go: the task stays running, not failed.
        assert waiting.status is TaskStatus.RUNNING
        assert waiting.nodes["s"].status is NodeStatus.SUCCEEDED
        assert waiting.nodes[node_id].status is NodeStatus.PENDING
        assert waiting.nodes[node_id].waiting_for_pool == "gpu"
        assert waiting.lease is None, "no worker holds a task waiting for a pool"
        # The release commits before the worker's own task for it returns: the slot frees a moment later.
        assert await eventually(lambda: cpu.running_count == 0, timeout=5.0), \
            "the waiting task does not hold a slot of the worker without the pool"

        gpu = _worker(repo, "gpu-box", frozenset({"gpu"}), _registry())
        await gpu.start()
        try:
            done = await eventually(lambda: _ended(repo, waiting.id))
        finally:
            await gpu.stop()
    finally:
        await cpu.stop()
    assert done.status is TaskStatus.SUCCEEDED, done.error
    assert done.nodes[node_id].status is NodeStatus.SUCCEEDED and done.nodes[node_id].attempts == 1
    assert done.nodes[node_id].waiting_for_pool is None
    assert done.nodes["s"].attempts == 1, "the node run before the hand-over did not run again"
    assert done.interruptions == 0


async def test_the_rest_of_the_task_runs_before_it_waits(repo: Repository) -> None:
    """In a diamond, the branch any worker may run is done before the task waits for the GPU."""
    waiting, cpu = await _run_until_waiting(repo, "diamond", "a")
    try:
        assert waiting.nodes["b"].status is NodeStatus.SUCCEEDED
        end = waiting.nodes.get("e")  # not started (the API's tasks list it pending from the start)
        assert end is None or (end.status is NodeStatus.PENDING and end.waiting_for_pool is None)
        gpu = _worker(repo, "gpu-box", frozenset({"gpu"}), _registry())
        await gpu.start()
        try:
            done = await eventually(lambda: _ended(repo, waiting.id))
        finally:
            await gpu.stop()
    finally:
        await cpu.stop()
    assert done.status is TaskStatus.SUCCEEDED
    assert done.result == {"a": {"v": {"x": 1}}, "b": {"v": {"x": 1}}}
    assert {run.attempts for run in done.nodes.values()} == {1}


async def test_cancelling_a_task_that_waits_for_a_pool_ends_it(repo: Repository) -> None:
    waiting, cpu = await _run_until_waiting(repo, "chain", "a")
    try:
        cancelled = await repo.request_cancel(waiting.id)
    finally:
        await cpu.stop()
    assert cancelled.status is TaskStatus.CANCELLED
    assert cancelled.error is not None and "gpu" in cancelled.error.message
    # Nobody claims it afterwards: a worker of the pool finds nothing.
    assert await repo.claim_tasks("gpu-box", 5.0, 10, frozenset({"gpu"})) == []
    assert (await repo.get_task(waiting.id)).status is TaskStatus.CANCELLED


async def test_a_worker_serving_the_pool_runs_the_whole_task_without_a_hand_over(repo: Repository) -> None:
    task, _ = await repo.create_task("chain", 1, TaskRequest("s", "e", "e"))
    gpu = _worker(repo, "gpu-box", frozenset({"gpu"}), _registry())
    await gpu.start()
    try:
        done = await eventually(lambda: _ended(repo, task.id))
    finally:
        await gpu.stop()
    assert done.status is TaskStatus.SUCCEEDED and done.claims == 1


async def test_a_recovery_sweep_leaves_a_waiting_task_alone(repo: Repository) -> None:
    """A waiting task has no lease; it is not a dead worker's task to requeue."""
    waiting, cpu = await _run_until_waiting(repo, "chain", "a")
    try:
        assert await repo.requeue_expired(exclude_worker="someone-else") == 0
        again = await repo.get_task(waiting.id)
    finally:
        await cpu.stop()
    assert again.status is TaskStatus.RUNNING and again.nodes["a"].waiting_for_pool == "gpu"
