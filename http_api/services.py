"""The long-lived parts of a process, built once and passed to handlers and the CLI."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from graph_runtime import errors, selection
from graph_runtime.children import handed_on
from graph_runtime.events import EventHub
from graph_runtime.executor import Executor
from graph_runtime.flow import Flow
from graph_runtime.models import Claim, Task, TaskRequest, TaskTrigger
from graph_runtime.scheduler import Scheduler
from http_api import rerun, secret_resolver, traceparent
from http_api.callbacks import CallbackDispatcher
from http_api.file_links import FileLinks
from http_api.file_resolver import check_request_files
from http_api.schemas import ExecuteBody
from http_api.settings import Settings
from nodes import codec
from nodes.files import File
from nodes.registry import Registry
from storage.files import BlobFileStore
from storage.repository import Repository
from storage.secrets import SecretCipher

log = logging.getLogger(__name__)


@dataclass
class Services:
    settings: Settings
    repo: Repository
    registry: Registry
    executor: Executor
    scheduler: Scheduler
    files: BlobFileStore
    links: FileLinks
    cipher: SecretCipher  # seals and opens secrets (storage.secrets); derived from the master key
    callbacks: CallbackDispatcher  # delivers ended tasks to their callback URLs (started by serve)
    events: EventHub  # every task event of this process, stored and fanned out (SPEC §11)
    accepting: bool = True


def fingerprint(body: dict[str, Any], revision: int | None, mode: str = "prod") -> str:
    """Idempotency compares the parsed request (key order aside) plus the pinned revision and the mode
    (which ``?executionEnvironmentMode=`` may give outside the body)."""
    compared: dict[str, Any] = {"body": body, "revision": revision}
    if mode != "prod":  # left out for prod: keys stored before modes existed keep their fingerprint
        compared["mode"] = mode
    return hashlib.sha256(codec.canonical(compared)).hexdigest()


def build_request(flow: Flow, body: ExecuteBody) -> TaskRequest:
    s, e, r = selection.resolve_ids(flow, body.start_node_id, body.end_node_id, body.result_node_id)
    return TaskRequest(
        start_node_id=s, end_node_id=e, result_node_id=r,
        node_settings=body.node_settings, init_context=body.init_context, timeout_s=body.timeout_s,
        mode=body.mode or "prod", callback_url=body.callback_url,
    )


@dataclass(frozen=True)
class Checked:
    """A request that passed every check execute makes: what ``submit`` persists and ``plan`` describes."""

    flow: Flow
    revision: int
    request: TaskRequest
    plan: selection.Plan
    files: list[File]  # the uploads the request names, each known to the store


async def check(services: Services, flow_id: str, body: ExecuteBody, *, revision: int | None = None,
                unstored: Flow | None = None, seen: bool = False) -> Checked:
    """Every check of an execute request, writing nothing (execute and the dry run share it).

    ``unstored``: check against this definition (a flow file ``flows show --plan`` reads, not stored
    yet: revision 0) instead of the stored flow ``flow_id``. ``seen``: the flow's latest revision as
    this process last saw it (``get_flow(seen=True)``: no read), for a task created ``if_latest``.

    Raises the same errors execute answers with: unknown flow or revision, selection, settings,
    missing inputs, unknown files, secrets in the request or unknown to the server.
    """
    secret_resolver.refuse_in_request(body.node_settings)
    if unstored is not None:
        flow, rev = unstored, 0
    else:
        flow, rev, _ = await services.repo.get_flow(flow_id, revision, seen=seen)
    request = build_request(flow, body)
    if body.from_task_id is not None:
        request = await rerun.with_inputs_from_task(services, flow, rev, request, body.from_task_id)
    plan = selection.plan(flow, services.registry, request, limits=services.executor.limits)
    files = await check_request_files(services.files, request.node_settings)
    await secret_resolver.check_known(services.repo, plan, request.mode)
    return Checked(flow, rev, request, plan, files)


async def submit(
    services: Services,
    flow_id: str,
    body: ExecuteBody,
    *,
    revision: int | None = None,
    idempotency_key: str | None = None,
    raw_body: dict[str, Any] | None = None,
    key_id: str | None = None,
    trigger: TaskTrigger | None = None,
    waits: bool = False,
    claim: Claim | None = None,
    adopt: Callable[[Task], None] | None = None,
) -> tuple[Task, bool]:
    """Validate the whole request, persist the task as queued and wake the scheduler.

    ``trigger``: the flow's trigger that starts it (SPEC §11), recorded in the task's ``data``.
    ``waits``: the caller waits for its end here (``?wait``); on PostgreSQL this process is named
    its watcher, so a worker elsewhere that ends it says so at once (the wait passes
    ``announced=created`` to ``EventHub.wait_ended``).
    ``claim``: create it running under this claim instead, for the caller to run at once; nobody is
    woken for it. ``adopt``: given the task as soon as it is inserted under ``claim``, whatever the
    caller does next (``graph-runtime run``: ``Scheduler.claim_here`` and ``Scheduler.adopt``, then
    ``run_child``); without it the caller runs the task itself.
    Returns the task and whether it was created (False: an idempotent replay).
    """
    request_print = fingerprint(raw_body or {}, revision, body.mode or "prod") if idempotency_key else None
    if idempotency_key is not None and request_print is not None:
        # A replay returns the first task even if the flow has changed since.
        earlier = await services.repo.find_idempotent_task(flow_id, idempotency_key, request_print)
        if earlier is not None:
            return earlier, False
    args = (services, flow_id, body, revision, idempotency_key, request_print, key_id, trigger, waits, claim, adopt)
    try:
        # The latest revision as this process last saw it, no read; the insert checks it still is.
        return await _create(*args, seen=True)
    except errors.StaleRevision:  # another process stored a newer one, or deleted the flow: read it
        return await _create(*args, seen=False)  # and check again: the same refusal, or what is right now


async def _create(services: Services, flow_id: str, body: ExecuteBody, revision: int | None,
                  idempotency_key: str | None, request_print: str | None, key_id: str | None,
                  trigger: TaskTrigger | None, waits: bool, claim: Claim | None, adopt: Callable[[Task], None] | None,
                  *, seen: bool) -> tuple[Task, bool]:
    """``submit``'s checks and insert. ``seen``: check against the latest revision this process saw
    (no read) and insert only if it still is the latest; ``StaleRevision`` when it is not, or when
    the request is refused against it (another process may have stored a revision this request is
    right for: new nodes, settings, inputs)."""
    try:
        checked = await check(services, flow_id, body, revision=revision, seen=seen)
    except errors.StoreUnavailable:
        raise
    except Exception as refused:
        if seen and revision is None:
            raise errors.StaleRevision(f"refused against the revision of {flow_id!r} remembered here") from refused
        raise
    request, plan, files, rev = checked.request, checked.plan, checked.files, checked.revision
    if trigger is not None:
        request = dataclasses.replace(request, trigger=trigger)
    if (caller_trace := traceparent.caller()) is not None:  # kept with the task: its runner continues the trace
        request = dataclasses.replace(request, traceparent=caller_trace)
    scheduler = services.scheduler
    # A caller waiting here, and a slot free: the task is created running in it, not queued.
    # Else it is queued, and other workers are woken unless this process claims it at once.
    reserved = scheduler.reserve_slot() if waits and claim is None else None
    claim = claim or reserved
    promised = claim is None and scheduler.promise_claim()
    creating = services.repo.create_task(
        flow_id, rev, request,
        idempotency_key=idempotency_key,
        fingerprint=request_print,
        key_id=key_id,
        node_ids=plan.order,
        wake=claim is None and not promised,
        watcher=scheduler.worker_id if waits else None,
        claim=claim,
        if_latest=seen and revision is None,
    )
    try:
        if reserved is not None:
            task, created = await handed_on(creating, scheduler.run_reserved)
        elif adopt is not None and claim is not None:
            task, created = await handed_on(creating, lambda made: adopt(made) if made is not None else None)
        else:
            task, created = await creating
    except BaseException:
        if promised:
            scheduler.notify()  # the promise ends with the attempt (the loop finds nothing new)
        raise
    if created:
        if files:  # a used upload is kept while tasks reference it, not swept as unused after a day
            await services.files.mark_used({file.id for file in files})
        if claim is None:
            scheduler.notify()
        log.info("task queued", extra={"action": "task_queued", "task_id": task.id, "flow_id": flow_id, "revision": rev,
                                       "running_here": claim is not None})
    return task, created
