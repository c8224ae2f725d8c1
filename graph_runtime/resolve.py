"""Turning a node's merged parameters into what its ``run`` gets: references resolved.

Settings and inputs may hold references that are not values yet: a file value or a URL where a
node takes a file, a ``{"$secret": NAME}`` in a flow's settings. Each kind has a
:class:`ParamResolver`, given to the executor at construction (storage and the HTTP layer build
them; the executor knows none of their details). They run in order just before the node's first
try; a resolver that fails fails the node (a ``nodes.errors.GraphRuntimeError``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from graph_runtime.models import Task
from nodes.contract import NodeType

REDACTED = "[secret]"


@dataclass(frozen=True)
class Resolved:
    """Parameters after one resolver, and the values that must never surface from this node run.

    Attributes:
        params: the parameters to hand on.
        redact: secret values resolved into them: any output or error text containing one
            verbatim has it replaced by ``[secret]``.
    """

    params: dict[str, Any]
    redact: frozenset[str] = frozenset()


class ParamResolver(Protocol):
    async def resolve(self, task: Task, node_id: str, node_type: type[NodeType], params: dict[str, Any]) -> Resolved:
        """Resolve the references this resolver knows in ``params`` (do not modify it in place)."""


def redact(value: Any, secrets: Iterable[str]) -> Any:
    """``value`` with every occurrence of each secret in its strings (and keys) replaced by ``[secret]``."""
    hidden = sorted((s for s in secrets if s), key=len, reverse=True)  # longest first: no partial leftovers
    if not hidden:
        return value

    def clean(item: Any) -> Any:
        if isinstance(item, str):
            for secret in hidden:
                if secret in item:
                    item = item.replace(secret, REDACTED)
            return item
        if isinstance(item, dict):
            return {clean(k): clean(v) for k, v in item.items()}
        if isinstance(item, list):
            return [clean(v) for v in item]
        return item

    return clean(value)
