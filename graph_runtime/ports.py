"""What the executor and scheduler need from persistence. ``storage`` implements it."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from graph_runtime.events import EventBatch
from graph_runtime.flow import Flow
from graph_runtime.models import Claim, Fenced, Lease, NodeRun, Task, TaskOutcome, TaskRequest


class TaskStore(Protocol):
    """Persistence of tasks and node runs, as the executor sees it.

    Every method commits before it returns: when ``save_node_runs`` returns, the node's status
    and output survive a crash, so successors may start. A busy or unreachable database raises
    ``graph_runtime.errors.StoreUnavailable``; the executor retries those writes.

    Fencing: a write that carries a :class:`Lease` is made only while that lease is the task's
    current one (status running, same worker, same claim). A worker that froze past its lease
    (a GC pause, a stopped VM) and whose task another worker resumed records nothing more.
    """

    async def claim_tasks(self, worker: str, lease_s: float, limit: int,
                          pools: frozenset[str] = frozenset()) -> list[Task]:
        """Claim up to ``limit`` tasks in one statement, oldest first: queued ones, and running ones
        parked for one of ``pools`` (see :meth:`park_task`). Each moves to running under a lease
        held by ``worker`` and comes back with its nodes and its ``lease`` (the claim's fencing
        epoch). Concurrent claimers never take the same task (PostgreSQL: ``FOR UPDATE SKIP LOCKED``)."""

    async def park_task(self, task_id: int, pool: str, runs: Sequence[NodeRun], *, lease: Lease) -> None:
        """Hand the task over to a worker serving ``pool``: record ``runs`` (the nodes waiting for it,
        with ``waiting_for_pool`` set, and any other changes), then drop the lease. The task stays
        ``running`` without a worker until :meth:`claim_tasks` with that pool takes it; recovery
        never requeues it, and a cancel ends it at once. Wakes idle workers (NOTIFY).

        Raises ``LeaseLost`` (nothing written) when ``lease`` is no longer the task's."""

    async def load_flow(self, flow_id: str, revision: int) -> Flow:
        """The definition of ``flow_id`` at ``revision`` (kept even if the flow is deleted)."""

    async def get_flow(self, flow_id: str, revision: int | None = None) -> tuple[Flow, int, datetime]:
        """The latest (or the given) revision of a flow that is not deleted: ``(flow, revision, created)``.
        Raises ``FlowNotFound`` / ``RevisionNotFound``."""

    async def create_task(self, flow_id: str, revision: int, request: TaskRequest, *,
                          idempotency_key: str | None = None, fingerprint: str | None = None,
                          key_id: str | None = None, node_ids: Sequence[str] = (),
                          parent_id: int | None = None, wake: bool = True,
                          claim: Claim | None = None) -> tuple[Task, bool]:
        """Queue a task (a child task of a subflow or map, here), or find the one created before
        with the same idempotency key: ``(task, created)``. ``wake``: tell idle workers elsewhere.
        ``claim``: create it running, claimed under it, not queued."""

    async def claim_task(self, task_id: int, worker: str, lease_s: float) -> Task | None:
        """Claim ``task_id`` if it is queued (as :meth:`claim_tasks` does); None otherwise."""

    async def get_task(self, task_id: int, *, items: bool = False) -> Task:
        """The task with its node runs (its map items' runs too if ``items``)."""

    async def cancel_children(self, parent_id: int) -> list[int]:
        """Cancel every unfinished descendant task of ``parent_id``; their ids."""

    async def save_node_runs(self, task_id: int, runs: Sequence[NodeRun], *, lease: Lease | None = None) -> None:
        """Insert or update these node runs of ``task_id`` in one transaction; ``LeaseLost`` if fenced off."""

    async def save_node_runs_many(self, rows: Sequence[tuple[int, NodeRun]],
                                  leases: Mapping[int, Lease] | None = None,
                                  events: Sequence[EventBatch] = ()) -> Fenced:
        """Insert or update node runs of several tasks, ``(task_id, run)`` each, and store ``events``
        (each batch fenced by its own epoch), in one transaction.

        Returns what the fence kept out: the tasks in ``leases`` whose lease was lost (their rows
        were not written), and the event batches whose epoch is no longer their task's claim.
        """

    async def finish_task(self, task_id: int, outcome: TaskOutcome, runs: Sequence[NodeRun], *,
                          lease: Lease | None = None, events: Sequence[EventBatch] = ()) -> None:
        """Record the task's end together with its last node-run changes and ``events`` (its final
        event), and drop its lease.

        Raises ``LeaseLost`` (nothing written) when ``lease`` is no longer the task's.
        """

    async def is_cancel_requested(self, task_id: int) -> bool:
        """Whether someone asked to cancel ``task_id`` (set by the API, possibly in another process)."""

    async def renew_leases(self, worker: str, task_ids: Collection[int], lease_s: float) -> set[int]:
        """Extend ``worker``'s leases; return the ids it still holds."""

    async def release_tasks(self, worker: str, task_ids: Collection[int]) -> int:
        """Requeue tasks ``worker`` stops running on purpose (graceful shutdown)."""

    async def requeue_expired(self, exclude_worker: str | None = None, *, running: Collection[int] = ()) -> int:
        """Requeue running tasks whose lease expired (their worker died or could not record their end),
        counting an interruption each; never the ``running`` tasks of ``exclude_worker``, never a
        task parked for a pool. One reaper at a time: while another process sweeps, this returns 0."""


class WorkWakeups(Protocol):
    """Tells a worker at once that tasks were queued anywhere (PostgreSQL's LISTEN/NOTIFY); its
    poll is then only the fallback."""

    async def start(self, on_work: Callable[[], None]) -> None:
        """Start listening; ``on_work`` is called on this loop for each wake-up."""

    async def stop(self) -> None:
        """Stop listening."""


class OutputCache(Protocol):
    """The persistent output cache of deterministic nodes (SPEC §9), keyed by
    :func:`graph_runtime.output_cache.cache_key`. ``storage`` implements it, bounded by bytes (LRU).

    A busy or unreachable database raises ``StoreUnavailable``; the executor then runs the node
    as if nothing were cached, and skips storing its output.
    """

    async def get(self, key: str) -> tuple[dict[str, Any], float] | None:
        """The output stored under ``key`` and what its run cost, marking it just used; None on a miss."""

    async def put(self, key: str, node_type: str, output: dict[str, Any], cost: float) -> None:
        """Store ``output`` under ``key`` (replacing any), then evict the least recently used
        entries until the cache is within its byte bound."""
