"""The output cache's key (SPEC §9): which node runs may be served from the cache, and under what.

A node may be cached when its type says equal parameters give an equal output
(``NodeType.deterministic``, or ``cacheable(params)`` for ``llm.*`` at temperature 0) and its
``cache`` setting is not false. The key is the SHA-256 of the canonical JSON of the type, its
``version`` and the node's resolved parameters without the run settings (timeout, retries…),
in which each file value stands for its bytes (sha256), name and content type, not its id: the
same bytes uploaded twice hit the same entry, while a renamed file (whose derived outputs are
named after it) does not.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from graph_runtime.ports import OutputCache
from nodes import codec, contract
from nodes import errors as node_errors
from nodes.contract import NodeType
from nodes.files import FILE_KEY, FileNotFound, FileStore, file_values, is_file_value

log = logging.getLogger(__name__)


def cache_key(node_type: type[NodeType], params: dict[str, Any]) -> str | None:
    """The hex key of a run of ``node_type`` with these resolved ``params``; None when it is not cacheable."""
    try:
        policy, rest = contract.split_policy(params, node_type.policy)
    except node_errors.InvalidParams:
        return None  # the run reports it
    if not policy.cache or not node_type.cacheable(rest):
        return None
    try:
        text = codec.canonical({"type": node_type.type, "version": node_type.version, "params": _by_content(rest)})
    except TypeError:
        return None  # something that is not JSON: the node decides what it makes of it, uncached
    return hashlib.sha256(text).hexdigest()


def _by_content(value: Any) -> Any:
    """``value`` with each file value that knows its sha256 replaced by what its bytes are."""
    if is_file_value(value):
        if value.get("sha256"):
            return {"$sha256": value["sha256"], "name": value.get("name"), "content_type": value.get("content_type")}
        return value  # an id the resolver did not complete (outside a file slot): keyed by the id
    if isinstance(value, dict):
        return {key: _by_content(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_by_content(item) for item in value]
    return value


def file_ids(output: Any) -> list[str]:
    """The ids of the files a cached output refers to (each must still exist for a hit)."""
    return [str(item[FILE_KEY]) for item in file_values(output)]


async def lookup(cache: OutputCache, files: FileStore | None, key: str, task_id: int,
                 node_id: str) -> tuple[dict[str, Any], float] | None:
    """The output and cost cached under ``key``, or None. An entry whose files were deleted since
    (retention, a user's DELETE) is a miss, filled again after the run; a cache that cannot answer
    is a miss too (logged): the node runs."""
    try:
        found = await cache.get(key)
        if found is not None and files is not None:
            for file_id in file_ids(found[0]):
                await files.get(file_id)
    except FileNotFound:
        return None
    except node_errors.GraphRuntimeError as exc:  # unreachable or refused (storage errors included)
        log.warning("output cache unavailable, running the node: %s", exc.message,
                    extra={"action": "cache_unavailable", "task_id": task_id, "node_id": node_id})
        return None
    return found


async def fill(cache: OutputCache, key: str, node_type: str, output: dict[str, Any], cost: float,
               task_id: int) -> None:
    """Keep a fresh output for the next run with the same key; a cache that cannot take it is no
    node's failure (logged)."""
    try:
        await cache.put(key, node_type, output, cost)
    except (node_errors.GraphRuntimeError, TypeError, ValueError) as exc:
        log.warning("output not cached: %s", exc, extra={"action": "cache_put_failed", "task_id": task_id})
