"""Rerun from a node (SPEC §9): execute's ``from_task_id`` turned into the values a request feeds."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from graph_runtime import errors, rerun, selection
from graph_runtime.flow import Flow
from graph_runtime.models import Task, TaskRequest
from http_api.file_resolver import FileRefNotFound, check_request_files

if TYPE_CHECKING:
    from http_api.services import Services


async def with_inputs_from_task(services: Services, flow: Flow, revision: int, request: TaskRequest,
                                task_id: int) -> TaskRequest:
    """``request`` with the inputs its run set takes from task ``task_id``, kept in the request itself.

    Raises:
        errors.SelectionError: (422, field ``from_task_id``) no such task of this flow, or an
            upstream node changed since it ran.
        rerun.MissingOutputs: (422) an upstream node has no output in that task.
        FileRefNotFound: (422) a file in those outputs is gone.
    """
    earlier = await _task_of(services, flow.id, task_id)
    earlier_flow = flow
    if earlier.revision != revision:
        try:
            earlier_flow, _, _ = await services.repo.get_flow(flow.id, earlier.revision)
        except errors.NotFound:
            raise errors.SelectionError(f"revision {earlier.revision} of flow {flow.id!r}, which task {task_id} "
                                        "ran, is gone", field=rerun.FIELD) from None
    edges = selection.fed_from_outside(flow, services.registry, request.start_node_id, request.end_node_id)
    taken = rerun.inputs_from_task(flow, earlier_flow, earlier, edges, request.node_settings)
    try:  # writes nothing (the dry run shares this): the retention sweep keeps files named in a task's data
        await check_request_files(services.files, taken)
    except FileRefNotFound as exc:
        raise FileRefNotFound(f"task {task_id}'s output: {exc.message}", field=rerun.FIELD) from None
    return dataclasses.replace(request, from_task_id=task_id, from_task_inputs=taken)


async def _task_of(services: Services, flow_id: str, task_id: int) -> Task:
    """The task, if it belongs to ``flow_id``; one answer for "none" and "another flow's" (ids are not secrets
    of one flow, but a key scoped to this flow learns nothing about others)."""
    try:
        earlier = await services.repo.get_task(task_id)
    except errors.TaskNotFound:
        earlier = None
    if earlier is None or earlier.flow_id != flow_id:
        raise errors.SelectionError(f"flow {flow_id!r} has no task {task_id}", field=rerun.FIELD)
    return earlier
