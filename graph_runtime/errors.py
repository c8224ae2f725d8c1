"""Errors raised by flow loading, subgraph selection and task execution."""

from __future__ import annotations

from nodes.errors import GraphRuntimeError


class FlowInvalid(GraphRuntimeError):
    """The flow definition is not valid."""

    code = "flow_invalid"

    def __init__(self, problems: list[str], *, field: str | None = None) -> None:
        self.problems = problems
        summary = f"{len(problems)} problem(s): " + "; ".join(problems)
        super().__init__(summary, field=field)


class SelectionError(GraphRuntimeError):
    """The requested subgraph cannot run."""

    code = "invalid_selection"


class MissingInputs(SelectionError):
    """Inputs fed from outside the run set must be given in node_settings."""

    code = "missing_inputs"

    def __init__(self, missing: list[tuple[str, str, str]]) -> None:
        self.missing = missing
        listed = ", ".join(f"{node}.{inp} (from {up})" for node, inp, up in missing)
        first_node, first_input, _ = missing[0]
        super().__init__(
            f"these inputs come from nodes outside the run set; give them in node_settings: {listed}",
            field=f"node_settings.{first_node}.{first_input}",
        )


class InvalidSettings(GraphRuntimeError):
    """A node's settings are not valid for its type."""

    code = "invalid_settings"


class TaskTimeout(GraphRuntimeError):
    """The task ran longer than its timeout_s."""

    code = "task_timeout"


class TaskCancelled(GraphRuntimeError):
    """The task was cancelled."""

    code = "cancelled"


class TaskCrashed(GraphRuntimeError):
    """The task could not be resumed after a crash."""

    code = "crashed"


class NotFound(GraphRuntimeError):
    """Not found."""

    code = "not_found"


class FlowNotFound(NotFound):
    """No flow has this id."""

    code = "flow_not_found"


class RevisionNotFound(NotFound):
    """The flow has no such revision."""

    code = "revision_not_found"


class TaskNotFound(NotFound):
    """No task has this id."""

    code = "task_not_found"


class KeyNotFound(NotFound):
    """No server key has this id."""

    code = "key_not_found"


class TaskEnded(GraphRuntimeError):
    """The task has already ended."""

    code = "task_ended"


class IdempotencyConflict(GraphRuntimeError):
    """This idempotency key was used with a different request."""

    code = "idempotency_conflict"


class StoreUnavailable(GraphRuntimeError):
    """The database is busy or unreachable; try again shortly."""

    code = "store_unavailable"


class StoreClosed(StoreUnavailable):
    """The process closed its database connections (it is stopping): retrying cannot help."""


class StaleRevision(GraphRuntimeError):
    """A task created ``if_latest`` was not: its revision is no longer its flow's latest (another
    process stored a newer one, or deleted the flow). Nothing was written; read the flow again."""

    code = "stale_revision"


class LeaseLost(GraphRuntimeError):
    """This worker no longer holds the task's lease: another worker resumed it, so nothing is recorded."""

    code = "lease_lost"

    def __init__(self, message: str | None = None, *, task_ids: frozenset[int] = frozenset()) -> None:
        super().__init__(message)
        self.task_ids = task_ids
