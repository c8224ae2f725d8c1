"""Rerun from a node (SPEC §9): the inputs a request takes from an earlier task of its flow.

Pure: the caller loads the earlier task and the flow revision it ran, so this module never
touches storage. The values found are stored in the new task's request (``from_task_inputs``),
so a resumed task does not need the earlier one any more.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from graph_runtime import errors
from graph_runtime.flow import Edge, Flow
from graph_runtime.models import NodeStatus, Task

FIELD = "from_task_id"


class MissingOutputs(errors.MissingInputs):
    """Inputs to take from an earlier task in which their upstream node left no output."""

    def __init__(self, missing: list[tuple[str, str, str]], task_id: int) -> None:
        super().__init__(missing)
        upstream = ", ".join(sorted({source for _, _, source in missing}))
        listed = ", ".join(f"{node}.{name} (from {source})" for node, name, source in missing)
        self.message = (f"task {task_id} has no output of node(s) {upstream} for these inputs: {listed}; "
                        "give them in node_settings, or name a task in which those nodes succeeded")
        self.field = FIELD


def inputs_from_task(
    flow: Flow, earlier_flow: Flow, earlier: Task, edges: Iterable[Edge], node_settings: Mapping[str, Any]
) -> dict[str, dict[str, Any]]:
    """``{node: {input: value}}`` for each edge of ``edges`` whose input ``node_settings`` does not give.

    ``earlier_flow`` is the flow at ``earlier``'s revision: each upstream node must be defined there
    as it is now (same type and settings), else its output is not what it would give today.
    A value is the upstream node's whole output, or its key ``edge.output``.

    Raises:
        errors.SelectionError: an upstream node changed between the revisions (field ``from_task_id``).
        MissingOutputs: an upstream node has no (succeeded) output in ``earlier``.
    """
    wanted = [edge for edge in edges if not _given(node_settings, edge)]
    for source in sorted({edge.source for edge in wanted}):
        _check_unchanged(flow, earlier_flow, source, earlier)
    taken: dict[str, dict[str, Any]] = {}
    missing = []
    for edge in wanted:
        run = earlier.nodes.get(edge.source)
        output = run.output if run is not None and run.status is NodeStatus.SUCCEEDED else None
        if output is None or (edge.output is not None and edge.output not in output):
            missing.append((edge.target, edge.input_name, edge.source))
            continue
        taken.setdefault(edge.target, {})[edge.input_name] = output if edge.output is None else output[edge.output]
    if missing:
        raise MissingOutputs(missing, earlier.id)
    return taken


def _given(node_settings: Mapping[str, Any], edge: Edge) -> bool:
    """node_settings win: an input they give is not taken from the task (a non-object is refused later)."""
    given = node_settings.get(edge.target)
    return isinstance(given, Mapping) and edge.input_name in given


def _check_unchanged(flow: Flow, earlier_flow: Flow, node_id: str, earlier: Task) -> None:
    if earlier_flow is flow:
        return
    now = flow.node(node_id)
    then = next((node for node in earlier_flow.nodes if node.id == node_id), None)
    if then is None or (then.type, then.settings) != (now.type, now.settings):
        how = "did not exist" if then is None else "had another type or settings"
        raise errors.SelectionError(
            f"node {node_id!r} {how} in revision {earlier.revision}, which task {earlier.id} ran; "
            "its output there is not what it gives now: rerun it, or give its value in node_settings",
            node_id=node_id, field=FIELD,
        )
