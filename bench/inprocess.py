"""Our engine in-process on a real SQLite file, driven as ``graph-runtime run`` drives it.

Per flow: ``submit`` under this process's claim (validate, commit the task running here, as
``graph-runtime run`` and a subflow's child are created) → ``executor.execute`` to the end (every
node's start and result committed, the outcome committed). No live table and no lease heartbeat:
nothing else uses the database.
"""

from __future__ import annotations

from pathlib import Path

from bench import cases
from bench.references import check_result
from graph_runtime import flow as flows
from graph_runtime.executor import Control
from graph_runtime.models import Claim, Task, TaskStatus
from http_api import heap
from http_api.app import close_services, open_services
from http_api.schemas import ExecuteBody
from http_api.services import Services, submit
from http_api.settings import Settings

WORKER = "bench"
LEASE_S = 3600.0


class OurEngine:
    """graph-runtime's executor and repository on one SQLite file (WAL, as the product opens it)."""

    name = "graph-runtime"

    def __init__(self, services: Services) -> None:
        self.services = services

    @classmethod
    async def open(cls, db_path: Path, *, cache: bool = False) -> OurEngine:
        """``cache``: the output cache on. Off unless a case is about it: the cases repeat one flow,
        so with it on every deterministic node after the first run would be a hit."""
        settings = Settings(database_url=f"sqlite+aiosqlite:///{db_path}", flows_dir=None, log_level="WARNING")
        if not cache:
            settings = settings.model_copy(update={"cache_max_bytes": 0})
        services = await open_services(settings)
        heap.settle()  # as `serve` and `run` do once started (the references run in this process too)
        return cls(services)

    async def close(self) -> None:
        await close_services(self.services)

    async def install(self, shape: cases.Shape) -> None:
        """Store the shape's flow (not timed)."""
        await self.services.repo.save_flow(flows.parse(shape.flow_definition()))

    async def submit(self, shape: cases.Shape, *, here: bool = False) -> Task:
        """A task of ``shape``, queued (``here``: created running under this process's claim)."""
        task, _ = await submit(self.services, shape.flow_id, ExecuteBody(), raw_body={},
                               claim=Claim(WORKER, LEASE_S) if here else None)
        return task

    async def run_flow(self, shape: cases.Shape) -> Task:
        """Create one task of ``shape`` running here and execute it; it must succeed with the expected result."""
        task = await self.submit(shape, here=True)
        if task.lease is None:
            raise AssertionError(f"task {task.id} was not created claimed")
        done = await self.services.executor.execute(task, Control())
        if done.status is not TaskStatus.SUCCEEDED:
            raise AssertionError(f"task {task.id} ended {done.status.value}: {done.error}")
        if shape.node == "merge":  # a template chain's result is text made from the source data
            check_result(done.result)
        return done
