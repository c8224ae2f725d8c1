"""Worker pools (SPEC §10): which nodes of a plan this worker may not run.

A node runs on a worker of its pool: the flow node's own ``pool``, else its type's (``NodeType.pool``),
else, for a map running a node per item, that item type's pool (a map of a GPU model runs on the GPU
box). A node naming no pool runs on any worker. A worker serves the nodes naming no pool plus the
pools it was started with (``--pool gpu``).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from graph_runtime.selection import Plan
from nodes.registry import Registry


def node_pool(plan: Plan, registry: Registry, node_id: str) -> str | None:
    """The pool ``node_id`` runs on, or None for any worker."""
    node = plan.flow.node(node_id)
    if node.pool is not None:
        return node.pool
    node_type = registry.get(node.type)
    if node_type.pool is not None:
        return node_type.pool
    if node_type.fans_out:
        return _item_pool(plan.settings[node_id], registry)
    return None


def _item_pool(settings: Mapping[str, Any], registry: Registry) -> str | None:
    item = settings.get("node")
    name = item.get("type") if isinstance(item, Mapping) else None
    if isinstance(name, str) and name in registry:
        return registry.get(name).pool
    return None


def foreign_nodes(plan: Plan, registry: Registry, served: Collection[str] | None) -> dict[str, str]:
    """The plan's nodes this worker must hand over, with their pool; ``served`` None: every pool."""
    if served is None or not _may_name_pools(plan, registry):
        return {}
    foreign = {}
    for node_id in plan.order:
        pool = node_pool(plan, registry, node_id)
        if pool is not None and pool not in served:
            foreign[node_id] = pool
    return foreign


def _may_name_pools(plan: Plan, registry: Registry) -> bool:
    """Whether any node of the flow can name a pool: most flows name none, and each task's start
    then costs one memo lookup, not a pass over its nodes."""
    key = ("may_name_pools", id(registry))
    found = plan.flow.memo.get(key)
    if found is None:
        found = plan.flow.memo[key] = any(
            node.pool is not None or registry.get(node.type).pool is not None or registry.get(node.type).fans_out
            for node in plan.flow.nodes if node.type in registry
        )
    return bool(found)
