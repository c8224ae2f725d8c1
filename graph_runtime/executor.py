"""The executor: runs one task's selected subgraph on asyncio.

Per node: prepare inputs → run (with timeout and retries) → record outcome → schedule
successors. A node's status and output are committed through the ``TaskStore`` before any
successor starts; the task's outcome is decided in ``finally`` and persisted shielded from
cancellation.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import functools
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from graph_runtime import errors, output_cache, pools, selection
from graph_runtime.attempts import run_attempts
from graph_runtime.children import ChildLauncher, InlineLauncher, TaskChildren
from graph_runtime.commits import GroupCommitter
from graph_runtime.events import EventBatch, EventHub, EventKind
from graph_runtime.flow import Edge
from graph_runtime.models import (
    NodeRun,
    NodeStatus,
    RunError,
    Task,
    TaskOutcome,
    TaskStatus,
    is_item_run,
    item_run_id,
    start_order_key,
)
from graph_runtime.output_cache import cache_key
from graph_runtime.ports import OutputCache, TaskStore
from graph_runtime.resolve import ParamResolver, redact
from graph_runtime.shielding import outlast_cancel
from nodes import errors as node_errors
from nodes.contract import NodeType, RunContext
from nodes.fanout import ChildOutcome, Children, ChildRequest
from nodes.files import FileStore
from nodes.limits import Limits
from nodes.registry import Registry

log = logging.getLogger(__name__)

T = TypeVar("T")

def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class Control:
    """Why a running task is being cancelled: a user's cancel ends it, a shutdown leaves it resumable."""

    user_cancelled: bool = False
    asyncio_task: asyncio.Task[Any] | None = None
    # Set by the executor when the task was handed over to a worker of another pool (SPEC §10):
    # it is not this worker's any more, and must not be released to the queue.
    parked: bool = False
    ended: Task | None = None  # the task as it ended here (committed), for whoever ran it as a child
    # Runs the child tasks of subflow and map nodes (the scheduler: beside its slots, under its
    # heartbeat). None: they run inline in this executor (a test or a one-off run).
    launcher: ChildLauncher | None = None


@dataclass
class Executor:
    """Runs tasks against a :class:`TaskStore` with node types from a :class:`Registry`."""

    store: TaskStore
    registry: Registry
    http: Any = None
    allow_private: bool = False
    limits: Limits = dataclasses.field(default_factory=Limits)
    files: FileStore | None = None  # handed to every node as ctx.files
    prices: Mapping[str, Mapping[str, float]] = dataclasses.field(default_factory=dict)  # LLM_PRICES, as ctx.prices
    resolvers: Sequence[ParamResolver] = ()  # run in order on a node's parameters before its first try
    cache: OutputCache | None = None  # the output cache of deterministic nodes (SPEC §9); None: off
    events: EventHub | None = None  # numbers, stores and fans out the task's events (SPEC §11); None: none
    draining: bool = False  # set at shutdown: running nodes finish, no new node starts
    committer: GroupCommitter | None = None
    # A task whose worker died this often (between nodes too) is failing its process: give up (crashed).
    # Interruptions, not claims: a drain's release and a hand-off to another pool are not failures.
    max_claims: int = 20
    max_interruptions: int = 2  # its process died this often while a node ran: that node is crashing it
    # The pools this worker serves (SPEC §10); a node of another pool is handed over to a worker
    # serving it. None: every pool (a one-off `graph-runtime run`, an embedded test).
    pools: frozenset[str] | None = None
    _runs: dict[int, _TaskRun] = dataclasses.field(default_factory=dict, init=False, repr=False)  # by task id

    def __post_init__(self) -> None:
        if self.committer is None:
            self.committer = GroupCommitter(self.store)

    def running_nodes(self) -> list[tuple[int, str]]:
        """``(task id, node id)`` of the nodes running now (the loop watch reads it from its thread)."""
        return [(task_id, node_id) for task_id, run in list(self._runs.items())
                for node_id in list(run.running) if not node_id.startswith("skipped:")]

    async def execute(self, task: Task, control: Control | None = None) -> Task:
        """Run ``task`` (already claimed: status running) to its end and persist the outcome.

        Returns the task with its final status, or still ``running`` when a drain stopped it
        between nodes. A shutdown cancel re-raises ``CancelledError``; the interrupted nodes
        are saved as running, to run again when the task resumes. When the task's lease is lost
        (another worker resumed it), the run stops and records nothing more: the task is
        returned still ``running``, as the other worker's.
        """
        control = control or Control()
        run = _TaskRun(self, task, control.launcher or InlineLauncher(self))
        self._runs[task.id] = run
        try:
            return await self._execute(task, control, run)
        finally:
            self._runs.pop(task.id, None)
            # Its events are stored before anyone else may run it (a resume, a hand-over
            # continues their numbers), or a waiter hears of its end.
            if self.events is not None and (storing := self.events.task_stopped(task)) is not None:
                await outlast_cancel(storing, limit_s=FINISH_AFTER_CANCEL_S)

    async def _execute(self, task: Task, control: Control, run: _TaskRun) -> Task:
        try:
            try:
                await run.prepare()
            except BaseException:
                # Its end follows, and its final event needs the stream started; what made
                # prepare fail (a cancel, a crash loop, ...) is what goes on, not this.
                if self.events is not None:
                    with contextlib.suppress(Exception):
                        await self.events.task_started(task)
                raise
            # Its first event once prepare gave it its nodes (a first claim comes without them):
            # the task as a poll shows it, every node of the run set listed.
            if self.events is not None:
                await self.events.task_started(task)
            async with asyncio.timeout(task.request.timeout_s):
                await run.drive()
            if run.handed_over():
                await asyncio.shield(run.park())
                control.parked = True
                return task
            if run.unfinished():
                await asyncio.shield(run.abandon())
                return task
        except TimeoutError:
            run.fail(errors.TaskTimeout(f"the task ran longer than its timeout_s ({task.request.timeout_s}s)"))
        except asyncio.CancelledError:
            if not control.user_cancelled:
                await asyncio.shield(run.abandon())
                raise
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            run.stop_with(TaskStatus.CANCELLED, RunError.of(errors.TaskCancelled("cancelled by request")))
        except errors.LeaseLost:
            _log_lease_lost(task)
            return task
        except errors.StoreUnavailable as exc:
            # The database went away for a moment outside a retried write (a read): the task is not
            # at fault. It goes back to the queue as at a shutdown, and resumes when it is back.
            log.warning("store unavailable; the task goes back to the queue: %s", exc.message,
                        extra={"action": "task_released", "task_id": task.id})
            await asyncio.shield(run.abandon())
            return task
        except errors.GraphRuntimeError as exc:
            run.fail(exc)
        except Exception as exc:  # a bug in the runtime must still end the task truthfully
            log.exception("task crashed", extra={"action": "task_internal_error", "task_id": task.id})
            run.fail(errors.GraphRuntimeError(f"internal error: {type(exc).__name__}"))
        try:
            await _complete(run.finish(), task.id)
        except errors.LeaseLost:
            _log_lease_lost(task)
        return task


def _log_lease_lost(task: Task) -> None:
    log.warning("lease lost: another worker resumed the task; nothing more is recorded here",
                extra={"action": "lease_lost", "task_id": task.id})


FINISH_AFTER_CANCEL_S = 10.0
"""How long a task cancelled while recording its end (a stop) still waits for that write."""


async def _complete(write: Awaitable[None], task_id: int) -> None:
    """Await ``write`` even if the caller is cancelled meanwhile, for up to FINISH_AFTER_CANCEL_S
    more: a stop closes the store right after, and an outcome not committed by then is lost (the
    task would resume and its last node run again)."""
    await outlast_cancel(write, limit_s=FINISH_AFTER_CANCEL_S, on_orphaned=functools.partial(_log_failure, task_id))


def _log_failure(task_id: int, job: asyncio.Future[None]) -> None:
    if (not job.cancelled() and (exc := job.exception()) is not None
            and not isinstance(exc, (errors.StoreClosed, errors.LeaseLost))):
        log.error("task end not recorded: %s", exc, extra={"action": "task_record_failed", "task_id": task_id})


class _TaskRun:
    """The state of one task while it runs; not shared between tasks."""

    def __init__(self, executor: Executor, task: Task, launcher: ChildLauncher) -> None:
        self.ex = executor
        self.task = task
        self.launcher = launcher
        self.plan: selection.Plan | None = None
        self.running: dict[str, asyncio.Task[None]] = {}
        self.dirty: set[str] = set()
        self.failure: RunError | None = None
        self.final_status: TaskStatus | None = None
        self.waiting: dict[str, int] = {}  # unfinished predecessors per node
        self.remaining = 0  # nodes of the plan not succeeded yet
        self._ended_queue: asyncio.Queue[asyncio.Task[None]] = asyncio.Queue()
        self._skips: list[NodeRun] = []  # skipped since the last _start, to record
        self.foreign: dict[str, str] = {}  # nodes of pools this worker does not serve: their pool
        self.held: list[str] = []  # foreign nodes that became ready: the task goes to their pool
        # ``ctx.say`` by the secrets it redacts: one per task most often, not one per node run.
        self._tellers: dict[frozenset[str], Callable[[str, dict[str, Any]], None]] = {}

    async def persist(self, write: Callable[[], Awaitable[T]]) -> T:
        """Run a store write (or a read the task cannot do without), retrying while the database
        is busy or away: it costs latency, never a failed node or a lost transition."""
        delay = 0.05
        while True:
            try:
                return await write()
            except errors.StoreClosed:
                raise  # the process is stopping; the lease brings the task back
            except errors.StoreUnavailable as exc:
                log.warning("store unavailable, retrying in %.2fs: %s", delay, exc.message,
                            extra={"action": "store_retry", "task_id": self.task.id})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def prepare(self) -> None:
        crashed = self._crash_looping()
        if crashed is not None:
            raise crashed
        if self.task.interruptions > self.ex.max_claims:
            raise errors.TaskCrashed(f"the task was interrupted {self.task.interruptions} times; "
                                     "it is not resumed again")
        flow = await self.persist(lambda: self.ex.store.load_flow(self.task.flow_id, self.task.revision))
        try:
            self.plan = selection.plan(flow, self.ex.registry, self.task.request)
        except errors.GraphRuntimeError as exc:
            # It was valid when queued; what changed since (a node type uninstalled) makes
            # running it impossible.
            raise errors.TaskCrashed(f"the task cannot run on this server any more: {exc.message}") from exc
        self.foreign = pools.foreign_nodes(self.plan, self.ex.registry, self.ex.pools)
        for node_id in self.plan.order:
            run = self.task.nodes.get(node_id)
            if run is None:
                self.task.nodes[node_id] = NodeRun(node_id)
            elif run.status is not NodeStatus.SUCCEEDED:
                # Interrupted by a crash, or waiting for this worker's pool: it runs again, and its
                # attempts keep counting. No write here: its next attempt (or the task's end) records it.
                run.status, run.error, run.output = NodeStatus.PENDING, None, None
                if node_id not in self.foreign:
                    run.waiting_for_pool = None

    def _crash_looping(self) -> errors.TaskCrashed | None:
        """The task's process died (or froze past its lease) while running it, twice: a node that
        takes its process down must not take every restart down too. The node that was running
        is named and failed; the task ends ``crashed`` instead of resuming again."""
        if self.task.interruptions < self.ex.max_interruptions:
            return None
        # Only a node that was started that often is blamed: one still stored `running` from an
        # earlier interruption, whose next worker died (killed from outside) before starting it
        # again, has not taken a process down twice.
        running = sorted((r for r in self.task.nodes.values()
                          if r.status is NodeStatus.RUNNING and r.attempts >= self.ex.max_interruptions),
                         key=start_order_key)
        if not running:
            return None  # it died between nodes (or not in one node each time); max_claims still bounds it
        suspect = running[0]
        crash = errors.TaskCrashed(
            f"the process running node {suspect.node_id!r} died {self.task.interruptions} times while running "
            "this task; it is not resumed again",
            node_id=suspect.node_id,
        )
        for run in running:
            run.status, run.finished, run.error = NodeStatus.FAILED, utcnow(), RunError.of(crash)
            self.dirty.add(run.node_id)
        return crash

    def _initially_ready(self) -> list[str]:
        """Count each node's unfinished predecessors once; the nodes at zero can start.

        Skips are never trusted from the store: on a resume they are decided again here, from
        the succeeded nodes' outputs (a switch's says which case it took)."""
        assert self.plan is not None
        nodes = self.task.nodes
        self.remaining = sum(1 for n in self.plan.order if nodes[n].status is not NodeStatus.SUCCEEDED)
        self.waiting = {
            n: sum(1 for p in self.plan.predecessors[n] if nodes[p].status is not NodeStatus.SUCCEEDED)
            for n in self.plan.order
        }
        return self._settle([n for n in self.plan.order if nodes[n].status is NodeStatus.PENDING and self.waiting[n] == 0])

    def _successors_ready(self, node_id: str) -> list[str]:
        """``node_id`` succeeded: the successors it was the last input of (O(successors), not O(graph))."""
        assert self.plan is not None
        ready = []
        for successor in self.plan.successors[node_id]:
            self.waiting[successor] -= 1
            if self.waiting[successor] == 0:
                ready.append(successor)
        return self._settle(ready)

    def _settle(self, decided: list[str]) -> list[str]:
        """Of nodes whose predecessors have all ended, those that run; the others are skipped,
        and a skip counts as an ended predecessor downstream, so skips propagate."""
        assert self.plan is not None
        ready, queue = [], collections.deque(decided)
        while queue:
            node_id = queue.popleft()
            if self._reached(node_id):
                ready.append(node_id)
                continue
            run = self.task.nodes[node_id]
            run.status = NodeStatus.SKIPPED  # recorded by _start's next call; a resume decides it again anyway
            self._skips.append(run)
            self.remaining -= 1
            self.dirty.add(node_id)
            self._notify(run)
            for successor in self.plan.successors[node_id]:
                self.waiting[successor] -= 1
                if self.waiting[successor] == 0:
                    queue.append(successor)
        return ready

    def _reached(self, node_id: str) -> bool:
        """Whether a node whose predecessors have all ended runs: all of them reached it (or,
        with ``join: any``, one did). A predecessor reaches it when it succeeded and one of its
        edges here is taken (no ``when``, or the case its switch took)."""
        assert self.plan is not None
        reached = {edge.source for edge in self.plan.inbound[node_id] if self._taken(edge)}
        if self.plan.flow.node(node_id).joins_any:
            return bool(reached) or not self.plan.predecessors[node_id]
        return len(reached) == len(self.plan.predecessors[node_id])

    def _taken(self, edge: Edge) -> bool:
        upstream = self.task.nodes[edge.source]
        if upstream.status is not NodeStatus.SUCCEEDED:
            return False
        return edge.when is None or (upstream.output or {}).get("case") == edge.when

    async def drive(self) -> None:
        """Start ready nodes; as each ends, its successors start; stop at the first failure."""
        ended: asyncio.Queue[asyncio.Task[None]] = asyncio.Queue()
        self._ended_queue = ended
        try:
            self._start(self._initially_ready())
            while self.running and self.failure is None:
                finished = await ended.get()
                self.running.pop(finished.get_name(), None)
                finished.result()  # a bug in the executor surfaces here, not silently
        finally:
            await self._cancel_running()

    def handed_over(self) -> bool:
        """Nothing runs, nothing failed, and the nodes left wait for a pool this worker does not serve."""
        return self.failure is None and not self.ex.draining and bool(self.held)

    async def park(self) -> None:
        """Hand the task to a worker of the first waiting node's pool (in plan order): every node
        waiting for a pool says which, and the task stays ``running`` with no worker until one
        serving that pool claims it (SPEC §10)."""
        assert self.plan is not None and self.task.lease is not None
        await self._cancel_running()  # only the recording of skips can still be in flight
        await self.ex.committer.drain()  # type: ignore[union-attr]
        order = {node_id: i for i, node_id in enumerate(self.plan.order)}
        held = sorted(set(self.held), key=order.__getitem__)
        for node_id in held:
            self.task.nodes[node_id].waiting_for_pool = self.foreign[node_id]
            self.dirty.add(node_id)
            self._notify(self.task.nodes[node_id])
        pool = self.foreign[held[0]]
        runs = [self.task.nodes[n] for n in sorted(self.dirty) if n in self.task.nodes]
        if self.ex.events is not None:
            # Stored under this claim before the hand-over: once a worker of the pool claims the
            # task, this one's events are fenced off, and that worker numbers its own after them.
            await self.ex.events.flush()
        await self.persist(lambda: self.ex.store.park_task(self.task.id, pool, runs, lease=self.task.lease))  # type: ignore[arg-type]
        self.dirty.clear()
        log.info("waiting for a worker of pool %s", pool,
                 extra={"action": "task_parked", "task_id": self.task.id, "node_id": held[0]})

    def unfinished(self) -> bool:
        """Nodes are left and nothing failed: a drain stopped the task between nodes."""
        return self.failure is None and any(r.status is NodeStatus.PENDING for r in self.task.nodes.values())

    def _start(self, node_ids: list[str]) -> None:
        if self.ex.draining or self.failure is not None:
            return  # the task's end records the skips
        if self._skips:
            # Recorded now (not only at the task's end) so the task view shows them while the
            # taken branch runs; tracked like a node, so a lost lease surfaces in drive().
            skips, self._skips = self._skips, []
            saving = asyncio.create_task(self._save_skips(skips), name=f"skipped:{skips[0].node_id}")
            saving.add_done_callback(self._ended_queue.put_nowait)
            self.running[saving.get_name()] = saving
        for node_id in node_ids:
            if node_id in self.foreign:
                self.held.append(node_id)  # runs on a worker of its pool, after this one hands the task over
                continue
            if node_id not in self.running and self.task.nodes[node_id].status is NodeStatus.PENDING:
                task = asyncio.create_task(self._run_node(node_id), name=node_id)
                task.add_done_callback(self._ended_queue.put_nowait)
                self.running[node_id] = task

    async def _save_skips(self, runs: list[NodeRun]) -> None:
        await asyncio.gather(*(self.save(run) for run in runs))

    async def _cancel_running(self) -> None:
        for pending in self.running.values():
            pending.cancel()
        if self.running:
            await asyncio.gather(*self.running.values(), return_exceptions=True)
        self.running.clear()

    async def _run_node(self, node_id: str) -> None:
        assert self.plan is not None
        run = self.task.nodes[node_id]
        instance = self.ex.registry.instance(self.plan.flow.node(node_id).type)
        started = time.perf_counter()

        async def before_attempt() -> None:
            self.node_started(run)
            await self.save(run)

        try:
            output, cost = await self._attempt(run, instance, self._params(node_id), before_attempt)
        except errors.LeaseLost:
            raise  # not this node's failure: the task is another worker's now
        except asyncio.CancelledError:
            self._end_node(run, NodeStatus.CANCELLED, started, error=RunError("cancelled", "cancelled", node_id))
            raise
        except node_errors.GraphRuntimeError as exc:
            exc.node_id = node_id  # also for a bad input, found before the node's first try
            failure = RunError.of(exc)
            self._end_node(run, NodeStatus.FAILED, started, error=failure)
            await self.save(run)
            self.failure = self.failure or failure  # the first failure names the task's error
            log.warning("node failed: %s", exc.message, extra={"action": "node_failed", "task_id": self.task.id,
                                                               "node_id": node_id, "status": exc.code})
            return
        self._end_node(run, NodeStatus.SUCCEEDED, started, output=output, cost=cost)
        self.remaining -= 1
        if self.remaining == 0:
            # The last node: no successor waits for this row, and the task's end commits it
            # together with the outcome (one transaction, not two).
            return
        # Successors are created now and queue their start rows behind this end row: one commit
        # carries both, and each successor runs only after it (its start awaits that commit).
        self._start(self._successors_ready(node_id))
        if run.cached:
            # Its output is durable already (in the cache): nothing waits for this row, which goes
            # in the next commit; a chain of hits runs on without a commit between its nodes. If the
            # write fails, the node stays dirty and the task's end writes it.
            written = self.ex.committer.enqueue(self.task.id, run, self.task.lease)  # type: ignore[union-attr]
            written.add_done_callback(functools.partial(self._written, node_id))
            return
        await self.save(run)
        self.dirty.discard(node_id)
        log.debug("node finished", extra={"action": "node_finished", "task_id": self.task.id, "node_id": node_id})

    async def _attempt(self, run: NodeRun, instance: NodeType, raw: dict[str, Any],
                       before_attempt: Callable[[], Awaitable[None]], *,
                       inherited: frozenset[str] = frozenset(), item: bool = False) -> tuple[dict[str, Any], float]:
        """Run one node (or one map item) to its output and cost: resolve its parameters, serve it
        from the output cache or run its tries, and keep secrets out of what it returns.

        A map item (``item``) keeps its map's secrets (``inherited``) out of what it returns too;
        resolvers see its own run id (``map1[3]``).

        Raises:
            nodes.errors.GraphRuntimeError: its failure, naming ``run.node_id``; secrets redacted.
        """
        secrets = inherited
        try:
            params, own = await self._resolved(run.node_id, instance, raw)
            secrets |= own
            key = cache_key(type(instance), params) if self.ex.cache is not None else None
            output = await self._from_cache(run, key)
            if output is not None:
                return output, 0.0
            fans_out = type(instance).fans_out
            children = TaskChildren(self.ex.store, self.ex.registry, self.ex.limits, self.launcher, self.task,
                                    run.node_id) if fans_out else None
            items = _MapItems(self, run, children, secrets) if fans_out and children is not None else None

            say = self._teller(secrets) if not item else None  # a map's items say nothing: the map's run does

            def make_context(_: int, timeout: float | None) -> RunContext:
                # ctx.attempt is the node's try number across resumes (what `attempts` shows); a try
                # cut short by a crash does not use up one of its retries.
                return RunContext(task_id=self.task.id, node_id=run.node_id, flow_id=self.task.flow_id,
                                  attempt=run.attempts, timeout_s=timeout, http=self.ex.http,
                                  allow_private=self.ex.allow_private, limits=self.ex.limits, files=self.ex.files,
                                  prices=self.ex.prices, children=children, items=items, say=say)

            output, cost = await run_attempts(instance, params, make_context, before_attempt)
            if secrets:
                output = redact(output, secrets)
            await self._fill_cache(key, instance.type, output, cost)
            return output, cost
        except node_errors.GraphRuntimeError as exc:
            exc.node_id = run.node_id
            if secrets:
                exc.message = redact(exc.message, secrets)
            raise

    def _written(self, node_id: str, written: asyncio.Future[None]) -> None:
        if not written.cancelled() and written.exception() is None:
            self.dirty.discard(node_id)

    async def _from_cache(self, run: NodeRun, key: str | None) -> dict[str, Any] | None:
        """The cached output under ``key`` (SPEC §9), marking ``run`` as served from it; None on a miss."""
        if key is None or self.ex.cache is None:
            return None
        found = await output_cache.lookup(self.ex.cache, self.ex.files, key, self.task.id, run.node_id)
        if found is None:
            return None
        run.cached, run.saved_cost, run.started = True, found[1], run.started or utcnow()
        return found[0]

    async def _fill_cache(self, key: str | None, node_type: str, output: dict[str, Any], cost: float) -> None:
        if key is not None and self.ex.cache is not None:
            await output_cache.fill(self.ex.cache, key, node_type, output, cost, self.task.id)

    async def _resolved(self, node_id: str, instance: NodeType, params: dict[str, Any]) -> tuple[dict[str, Any], frozenset[str]]:
        """``params`` with their references (files, secrets…) resolved, and the secret values to redact."""
        secrets: frozenset[str] = frozenset()
        for resolver in self.ex.resolvers:
            resolved = await resolver.resolve(self.task, node_id, type(instance), params)
            params, secrets = resolved.params, secrets | resolved.redact
        return params, secrets

    def _params(self, node_id: str) -> dict[str, Any]:
        """Settings merged with node_settings, then every inbound edge's value on top."""
        assert self.plan is not None
        params = dict(self.plan.settings[node_id])
        for edge in self.plan.inbound[node_id]:
            if not edge.carries_value or not self._taken(edge):
                continue  # a control edge, or a branch not taken (join: any)
            upstream = self.task.nodes[edge.source].output or {}
            if edge.output is None:
                params[edge.input_name] = upstream
            elif edge.output in upstream:
                params[edge.input_name] = upstream[edge.output]
            else:
                raise node_errors.InvalidParams(
                    f"input {edge.input_name!r}: upstream node {edge.source!r} has no output {edge.output!r}",
                    field=edge.input_name,
                )
        return params

    def node_started(self, run: NodeRun, *, item: bool = False) -> None:
        """``run`` starts a try. ``item``: it is a map's item, which the map's own run summarises
        (its ``items`` counts): no event of its own."""
        run.status = NodeStatus.RUNNING
        run.started = run.started or utcnow()
        run.attempts += 1
        self.dirty.add(run.node_id)
        if not item:
            self._notify(run)

    def _end_node(self, run: NodeRun, status: NodeStatus, started: float, *, output: Any = None,
                  cost: float | None = None, error: RunError | None = None, item: bool = False) -> None:
        run.status, run.finished = status, utcnow()
        run.execution_time = round(time.perf_counter() - started, 6)
        run.output, run.cost, run.error = output, cost if cost is not None else 0.0, error
        self.dirty.add(run.node_id)
        if not item:
            self._notify(run)

    def _notify(self, run: NodeRun) -> None:
        """A node of the flow changed (not a map's item: see node_started)."""
        if self.ex.events is not None:
            self.ex.events.node_changed(self.task, run)

    def _teller(self, secrets: frozenset[str]) -> Callable[[str, dict[str, Any]], None] | None:
        """``ctx.say`` of a node: its progress, log lines and tokens become the task's events (its
        secrets redacted), from the loop or from a thread the node runs code on. (What a node says
        names the node: one ``say`` serves every node of the task with the same secrets.)"""
        events = self.ex.events
        if events is None:
            return None
        say = self._tellers.get(secrets)
        if say is None:
            say = self._tellers[secrets] = self._new_teller(events, secrets)
        return say

    def _new_teller(self, events: EventHub, secrets: frozenset[str]) -> Callable[[str, dict[str, Any]], None]:
        loop, task_id = asyncio.get_running_loop(), self.task.id

        def say(kind: str, data: dict[str, Any]) -> None:
            said = redact(data, secrets) if secrets else data
            if threading.get_ident() == loop_thread:
                events.node_said(task_id, EventKind(kind), said)
            else:
                loop.call_soon_threadsafe(events.node_said, task_id, EventKind(kind), said)

        loop_thread = threading.get_ident()
        return say

    def _fans_out(self) -> bool:
        if self.plan is None:
            return False  # it ended before it could start: no node ran, no child was made
        return any(self.ex.registry.get(self.plan.flow.node(n).type).fans_out for n in self.plan.order)

    async def _cancel_children(self) -> None:
        """The task ends without success: its child tasks (subflows, maps over flows) end too."""
        try:
            cancelled = await self.ex.store.cancel_children(self.task.id)
        except errors.StoreUnavailable as exc:
            log.warning("child tasks not cancelled: %s", exc.message,
                        extra={"action": "children_cancel_failed", "task_id": self.task.id})
            return
        for child_id in cancelled:
            self.launcher.cancel(child_id)

    def fail(self, exc: node_errors.GraphRuntimeError) -> None:
        self.failure = self.failure or RunError.of(exc)

    def stop_with(self, status: TaskStatus, error: RunError) -> None:
        self.final_status, self.failure = status, error

    async def save(self, run: NodeRun) -> None:
        """Commit ``run`` (grouped with other writes), retrying while the store is unavailable."""
        assert self.ex.committer is not None
        try:
            await self.ex.committer.save(self.task.id, run, self.task.lease)
        except errors.StoreUnavailable:
            await self.persist(lambda: self.ex.committer.save(self.task.id, run, self.task.lease))  # type: ignore[union-attr]

    async def abandon(self) -> None:
        """Shutdown: persist what ran so far; running nodes stay ``running`` to be resumed."""
        await self._cancel_running()
        await self.ex.committer.drain()  # type: ignore[union-attr]
        interrupted = [r for r in self.task.nodes.values() if r.status is NodeStatus.CANCELLED]
        for run in interrupted:
            run.status, run.finished, run.error = NodeStatus.RUNNING, None, None
        # The last node's success waits for the task's end to be committed: keep it too.
        ended = [self.task.nodes[n] for n in sorted(self.dirty) if self.task.nodes[n].status is NodeStatus.SUCCEEDED]
        if interrupted or ended:
            # One try: at shutdown a dead database must not hang the exit; they are saved as
            # running already, and the lease's expiry brings the task back either way.
            with contextlib.suppress(errors.StoreUnavailable, errors.LeaseLost):
                await self.ex.store.save_node_runs(self.task.id, [*ended, *interrupted], lease=self.task.lease)

    async def _record_end(self, outcome: TaskOutcome, runs: list[NodeRun], unstored: list[EventBatch]) -> None:
        """Write the end with the task's events not stored yet and its final event, in one
        transaction; then ``task`` says it."""
        task = self.task
        ended = dataclasses.replace(task, status=outcome.status, finished=outcome.finished, result=outcome.result,
                                    error=outcome.error, execution_time=outcome.execution_time,
                                    execution_cost=outcome.execution_cost)
        if self.ex.events is not None:
            # What nodes said since finish took them (it awaited the committer, maybe retries):
            # numbered before the final event, so stored with it. In place: a retry keeps them.
            unstored += self.ex.events.unstored(task.id)
        final = self.ex.events.final_event(ended) if self.ex.events is not None else None
        events = [*unstored, final] if final is not None else unstored
        await self.ex.store.finish_task(task.id, outcome, runs, lease=task.lease, events=events)
        task.status, task.finished, task.result, task.error = ended.status, ended.finished, ended.result, ended.error
        task.execution_time, task.execution_cost = ended.execution_time, ended.execution_cost
        if self.ex.events is not None:
            self.ex.events.end_stored(events)

    async def finish(self) -> None:
        """Decide the task's outcome from its node runs and persist it in one transaction."""
        task = self.task
        for run in task.nodes.values():
            if run.status in (NodeStatus.PENDING, NodeStatus.RUNNING):
                run.status = NodeStatus.SKIPPED
                self.dirty.add(run.node_id)
        finished = utcnow()
        started = task.started or finished
        status = self.final_status or (TaskStatus.FAILED if self.failure else TaskStatus.SUCCEEDED)
        result_run = task.nodes.get(task.request.result_node_id)
        succeeded = status is TaskStatus.SUCCEEDED and result_run is not None
        outcome = TaskOutcome(
            status=status,
            finished=finished,
            execution_time=round((finished - started).total_seconds(), 6),
            # A map's cost includes its items': their runs are not counted again.
            execution_cost=round(sum(r.cost or 0.0 for r in task.nodes.values() if not is_item_run(r.node_id)), 9),
            result=result_run.output if succeeded and result_run else None,
            error=None if status is TaskStatus.SUCCEEDED else self.failure,
        )
        runs = [task.nodes[n] for n in sorted(self.dirty) if n in task.nodes]
        # The last node's events go in the end's transaction instead of one of their own.
        unstored = self.ex.events.unstored(task.id) if self.ex.events is not None else []
        await self.ex.committer.drain()  # type: ignore[union-attr]  # no grouped write may land after the end
        if status is not TaskStatus.SUCCEEDED and self._fans_out():
            await self._cancel_children()
        try:
            await self.persist(lambda: self._record_end(outcome, runs, unstored))
        except (TypeError, ValueError) as exc:
            # Something in the result could not be stored: end the task truthfully without it.
            log.error("task result cannot be stored: %s", exc, extra={"action": "task_store_failed", "task_id": task.id})
            error = RunError.of(errors.GraphRuntimeError(f"the task's result cannot be stored: {exc}"))
            outcome = dataclasses.replace(outcome, status=TaskStatus.FAILED, result=None, error=error)
            for run in runs:
                run.output = None
            await self._record_end(outcome, runs, unstored)
        log.info("task ended", extra={"action": "task_finished", "task_id": task.id, "status": status.value})


class _MapItems:
    """A map node's ``ctx.items``: each item runs as a node run ``<map>[<index>]`` of the task.

    An item's row is written when it ends, together with the map's own row and its ``items``
    counts (one grouped commit): a resumed map finds its succeeded items and does not run them
    again, and the task view shows the counts instead of a thousand rows.
    """

    def __init__(self, run: _TaskRun, map_run: NodeRun, children: Children, secrets: frozenset[str]) -> None:
        self.run = run
        self.map_run = map_run
        self.children = children
        self.secrets = secrets  # the map's resolved secrets: its items' outputs must not show them either
        self.counts: dict[str, int] = {}

    def begin(self, total: int) -> None:
        nodes = self.run.task.nodes
        done = sum(1 for i in range(total) if (r := nodes.get(item_run_id(self.map_run.node_id, i))) is not None
                   and r.status is NodeStatus.SUCCEEDED)
        self.counts = {"total": total, "succeeded": done, "failed": 0, "running": 0}
        self.map_run.items = dict(self.counts)

    async def run_node(self, index: int, node_type: str, params: dict[str, Any]) -> tuple[dict[str, Any], float]:
        item_id = item_run_id(self.map_run.node_id, index)
        earlier = self.run.task.nodes.get(item_id)
        if earlier is not None and earlier.status is NodeStatus.SUCCEEDED:
            return earlier.output or {}, earlier.cost or 0.0
        try:
            instance = self.run.ex.registry.instance(node_type)
        except node_errors.GraphRuntimeError as exc:
            raise node_errors.InvalidParams(f"node.type: {exc.message}", field="node.type") from exc
        item = NodeRun(item_id)
        self.run.task.nodes[item_id] = item

        async def before_attempt() -> None:
            self.run.node_started(item, item=True)  # counted, not written: an item's row is written when it ends

        started = time.perf_counter()
        self._count("running", 1)
        try:
            output, cost = await self.run._attempt(item, instance, params, before_attempt, inherited=self.secrets,
                                                    item=True)
        except node_errors.GraphRuntimeError as exc:
            self.run._end_node(item, NodeStatus.FAILED, started, error=RunError.of(exc), item=True)
            await self._ended(item, "failed")
            raise
        except asyncio.CancelledError:
            self._count("running", -1)
            raise
        self.run._end_node(item, NodeStatus.SUCCEEDED, started, output=output, cost=cost, item=True)
        await self._ended(item, "succeeded")
        return output, cost

    async def run_flow(self, index: int, request: ChildRequest) -> ChildOutcome:
        item_id = item_run_id(self.map_run.node_id, index)
        item = self.run.task.nodes.setdefault(item_id, NodeRun(item_id))
        self.run.node_started(item, item=True)
        started = time.perf_counter()
        self._count("running", 1)
        try:
            outcome = await self.children.run(f"[{index}]", request)
        except asyncio.CancelledError:
            self._count("running", -1)
            raise
        except node_errors.GraphRuntimeError as exc:
            self.run._end_node(item, NodeStatus.FAILED, started, error=RunError.of(exc), item=True)
            await self._ended(item, "failed")
            raise
        if outcome.succeeded:
            self.run._end_node(item, NodeStatus.SUCCEEDED, started, output=outcome.result, cost=outcome.cost,
                               item=True)
        else:
            error = RunError.from_dict(outcome.error) or RunError("node_failed", "the child task failed")
            self.run._end_node(item, NodeStatus.FAILED, started, cost=outcome.cost,
                               error=RunError(error.code, f"child task {outcome.task_id}: {error.message}", item_id),
                               item=True)
        await self._ended(item, "succeeded" if outcome.succeeded else "failed")
        return outcome

    def _count(self, status: str, change: int) -> None:
        self.counts[status] = self.counts.get(status, 0) + change
        self.map_run.items = dict(self.counts)

    async def _ended(self, item: NodeRun, status: str) -> None:
        self.counts["running"] -= 1
        self._count(status, 1)
        if item.cached:  # the task's saved_cost counts the map's runs, not its items'
            self.map_run.saved_cost = round((self.map_run.saved_cost or 0.0) + (item.saved_cost or 0.0), 9)
        self.run.dirty.discard(item.node_id)
        await asyncio.gather(self.run.save(item), self.run.save(self.map_run))
