"""The dry run's ``cached`` list (SPEC §9 "Plan"): the run-set nodes the output cache would answer now.

A node's cache key is the hash of its resolved parameters (:func:`output_cache.cache_key`), so it
is known before the run only when none of its inputs is made in this run: every value it gets
comes from its settings, the request's ``node_settings`` or ``from_task_id``'s earlier outputs.
A node fed by a node that runs in this task is not listed, even when that node is cached itself
(its output is not read to find out).

The parameters are resolved as the executor resolves them (secrets, file ids completed from the
store, so files count by sha256), through a :class:`CacheProbe` the caller builds; a file slot
holding a URL is not resolved (that would fetch it), so such a node is not listed. The cache is
asked once, read-only: a plan moves no entry's ``last_hit``.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, Protocol

from graph_runtime import selection
from graph_runtime.output_cache import cache_key
from nodes import file_params
from nodes.contract import NodeType
from nodes.errors import GraphRuntimeError
from nodes.registry import Registry


class CacheProbe(Protocol):
    """What the dry run needs to know of the output cache, and how the run would resolve parameters."""

    async def resolve(self, node_id: str, node_type: type[NodeType], params: dict[str, Any]) -> dict[str, Any]:
        """``params`` with their references resolved as the executor's resolvers would, writing nothing."""

    async def held(self, keys: Collection[str]) -> set[str]:
        """Which of ``keys`` the cache holds, changing nothing."""


async def cached_nodes(chosen: selection.Plan, registry: Registry, probe: CacheProbe) -> tuple[str, ...]:
    """The run-set nodes whose output the cache holds for the parameters they would run with, in run order."""
    keys: dict[str, str] = {}
    for node_id in _fed_from_outside_only(chosen):
        node_type = registry.get(chosen.flow.node(node_id).type)
        params = dict(chosen.settings[node_id])
        if cache_key(node_type, params) is None or _fetches(node_type, params):
            continue  # not cacheable whatever the references hold (checked first: it costs no I/O)
        try:
            resolved = await probe.resolve(node_id, node_type, params)
        except GraphRuntimeError:
            continue  # the run would fail this node before its lookup
        key = cache_key(node_type, resolved)
        if key is not None:
            keys[node_id] = key
    if not keys:
        return ()
    held = await probe.held(keys.values())
    return tuple(node_id for node_id, key in keys.items() if key in held)


def _fetches(node_type: type[NodeType], params: dict[str, Any]) -> bool:
    """Whether resolving ``params`` would fetch a URL into the store (a write, and a request)."""
    shapes = file_params.file_params(node_type.Params)
    return bool(shapes) and any(file_params.is_url(value) for _, value in file_params.slots(params, shapes))


_MEMO_PER_FLOW = 64


def _fed_from_outside_only(chosen: selection.Plan) -> tuple[str, ...]:
    """The run-set nodes no run-set node gives a value to (only those have a key before the run);
    kept per flow revision and run set, as the levels are."""
    key = ("plan-cache-candidates", chosen.order)
    found = chosen.flow.memo.get(key)
    if found is None:
        found = tuple(node_id for node_id in chosen.order
                      if not any(edge.carries_value for edge in chosen.inbound[node_id]))
        if len(chosen.flow.memo) < _MEMO_PER_FLOW:
            chosen.flow.memo[key] = found
    return found  # type: ignore[no-any-return]
