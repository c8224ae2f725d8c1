"""``{"$secret": NAME}`` in a flow's settings: refused in requests, checked at execute, resolved at run.

Only a flow's own settings may name a secret (SPEC §7): an execute key must not be able to send a
secret to a URL of its choosing. So a request's ``node_settings`` naming one is a 422
``secret_not_allowed``, and at run time a reference is resolved only where the flow revision's
settings for that node hold it: a ``{"$secret": …}`` arriving any other way (an upstream node's
output fed by an edge) stays the literal object it is. Resolved values go into
``Resolved.redact`` (the executor masks them in the node's output and error) and into the log
filter (:mod:`http_api.redaction`), so they never reach a task, an answer or a log line.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from graph_runtime.models import Task, is_item_run
from graph_runtime.resolve import Resolved
from graph_runtime.selection import Plan
from http_api import errors, redaction
from nodes import errors as node_errors
from nodes.contract import NodeType
from storage.repository import Repository
from storage.secrets import SecretCipher

REF = "$secret"
Path = tuple[str | int, ...]


class SecretNotAllowed(errors.RequestInvalid):
    """A request's node_settings may not name secrets; only a flow's own settings may."""

    code = "secret_not_allowed"


class SecretUnknown(errors.RequestInvalid):
    """The flow's settings name a secret that has no value in this mode (nor in prod)."""

    code = "secret_unknown"


def secret_name(value: Any) -> str | None:
    """The name in a ``{"$secret": NAME}`` reference; None for anything else."""
    if isinstance(value, Mapping) and len(value) == 1 and isinstance(value.get(REF), str):
        return value[REF]
    return None


def references(value: Any, path: Path = ()) -> Iterator[tuple[Path, str]]:
    """Every ``(path, name)`` of a secret reference inside ``value`` (objects and arrays)."""
    name = secret_name(value)
    if name is not None:
        yield path, name
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from references(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from references(item, (*path, index))


def _mentions(value: Any, path: Path = ()) -> Iterator[Path]:
    """Where ``value`` holds an object with a ``$secret`` key, well-formed or not."""
    if isinstance(value, Mapping):
        if REF in value:
            yield path
            return
        for key, item in value.items():
            yield from _mentions(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _mentions(item, (*path, index))


def dotted(path: Path) -> str:
    return ".".join(str(part) for part in path)


def refuse_in_request(node_settings: Mapping[str, Any]) -> None:
    """Raise :class:`SecretNotAllowed` naming the first place a request's node_settings names a secret."""
    for path in _mentions(node_settings):
        raise SecretNotAllowed(
            f"node_settings.{dotted(path)}: a request may not name a secret; put the reference in the "
            "flow's settings (PUT /api/v1/flows/{id}) and leave it out of the request",
            field=f"node_settings.{dotted(path)}",
        )


async def check_known(repo: Repository, plan: Plan, mode: str) -> None:
    """Raise :class:`SecretUnknown` for the first secret the run set's settings name without a value in ``mode``."""
    wanted = [(node_id, path, name) for node_id in plan.order for path, name in references(plan.settings[node_id])]
    if not wanted:
        return
    known = await repo.secret_names(mode)  # type: ignore[arg-type]
    for node_id, path, name in wanted:
        if name not in known:
            field = f"node_settings.{node_id}.{dotted(path)}"
            raise SecretUnknown(f"node {node_id!r}, setting {dotted(path)!r}: no secret named {name!r} "
                                f"(in mode {mode} or prod); set it with PUT /api/v1/secrets/{name}", field=field)


def _replace(value: Any, path: Path, new: Any) -> Any:
    """A copy of ``value`` with the item at ``path`` replaced (containers on the path copied, nothing mutated)."""
    if not path:
        return new
    head, rest = path[0], path[1:]
    if not _has(value, head):
        return value
    if isinstance(value, dict):
        return {**value, head: _replace(value[head], rest, new)}
    index = int(head)
    return [*value[:index], _replace(value[index], rest, new), *value[index + 1:]]


def _has(value: Any, part: str | int) -> bool:
    if isinstance(value, dict):
        return part in value
    return isinstance(value, list) and isinstance(part, int) and part < len(value)


def _at(value: Any, path: Path) -> Any:
    """The item at ``path`` inside ``value``; None when the path leads nowhere."""
    for part in path:
        if not _has(value, part):
            return None
        value = value[part]
    return value


class SecretResolver:
    """The :class:`graph_runtime.resolve.ParamResolver` for secrets: values of the task's mode,
    ``prod``'s where the mode has none of its own."""

    def __init__(self, repo: Repository, cipher: SecretCipher) -> None:
        self._repo = repo
        self._cipher = cipher
        # The references each node's settings hold, per flow revision (stored revisions never
        # change): most nodes hold none, and then resolving them costs one dict lookup.
        self._refs: dict[tuple[str, int, str], list[tuple[Path, str]]] = {}

    async def resolve(self, task: Task, node_id: str, node_type: type[NodeType], params: dict[str, Any]) -> Resolved:
        if is_item_run(node_id):
            # A map item's parameters come from its map's, whose secrets were put in when the map
            # itself was resolved (its executor keeps them out of the item's output too).
            return Resolved(params)
        where = (task.flow_id, task.revision, node_id)
        held = self._refs.get(where)
        if held is None:
            flow = await self._repo.load_flow(task.flow_id, task.revision)
            held = self._refs.setdefault(where, list(references(flow.node(node_id).settings)))
        # Only references the flow itself holds at that place, still there after the merge.
        refs = [(path, name) for path, name in held if secret_name(_at(params, path)) == name]
        if not refs:
            return Resolved(params)
        values = await self._repo.secret_values(self._cipher, {name for _, name in refs}, task.request.mode)  # type: ignore[arg-type]
        for path, name in refs:
            if name not in values:  # deleted since the task was queued
                raise node_errors.InvalidParams(
                    f"setting {dotted(path)}: no secret named {name!r} (in mode {task.request.mode} or prod)",
                    field=dotted(path))
            params = _replace(params, path, values[name])
        hidden = frozenset(values.values())
        redaction.REDACT_SECRETS.hide(hidden)
        return Resolved(params, hidden)
