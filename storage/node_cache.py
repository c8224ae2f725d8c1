"""The output cache's store (SPEC §9): ``node_cache`` rows, bounded by bytes with LRU eviction.

The repository's ``cache_get``/``cache_put``; :class:`StoredOutputCache` is them as the
:class:`graph_runtime.ports.OutputCache` the executor is given. A put is an
upsert (two tasks filling the same key at once both succeed, the later output wins — they are
equal anyway), followed in the same transaction, when due, by an eviction pass: while the total
size is above ``cache_max_bytes``, the entries with the oldest ``last_hit`` are deleted. A hit
moves its entry's ``last_hit`` to now (when it is older than a minute).

Summing the sizes reads the whole table, so a put does not do it every time: each repository
keeps an estimate (the last exact total plus what it put since) and sums exactly when the
estimate would pass the bound, or every ``CHECK_EVERY`` puts — which bounds what other processes
sharing the database can add unseen between two checks.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa

from nodes import codec
from storage import convert
from storage.repository_base import RepositoryBase
from storage.tables import node_cache as cache_t

DEFAULT_MAX_BYTES = 256 * 1024 * 1024

CHECK_EVERY = 64


class NodeCacheMethods(RepositoryBase):
    """Get, put and evict output-cache entries. ``cache_max_bytes`` bounds the sum of their sizes."""

    cache_max_bytes: int = DEFAULT_MAX_BYTES
    cache_touch_after_s: float = 60.0
    """A hit moves ``last_hit`` only when it is older than this: LRU to the minute, and a hot
    entry's hits stay reads (a write per hit would double a cached node's database work)."""
    _cache_estimate: int | None = None  # the total as this repository last knew it, plus its puts since
    _puts_unchecked: int = 0

    async def cache_get(self, key: str) -> tuple[dict[str, Any], float] | None:
        """The output under ``key`` and its run's cost, or None; a hit becomes the most recently used."""
        found = await self._hot.cache_get(key)
        if found is None:
            return None
        text, cost, last_hit = found
        now = convert.utcnow()
        if (now - last_hit).total_seconds() >= self.cache_touch_after_s:
            await self._hot.cache_touch(key, now)
        return codec.loads(text), float(cost)

    async def cache_put(self, key: str, node_type: str, output: dict[str, Any], cost: float) -> None:
        """Store ``output`` under ``key`` (an upsert), then evict down to ``cache_max_bytes``.

        An output larger than the whole bound is not stored (it would evict everything, then itself).
        """
        text = codec.dumps_str(output)
        size = len(text.encode())
        if size > self.cache_max_bytes:
            return
        estimate = self._cache_estimate
        due = estimate is None or estimate + size > self.cache_max_bytes or self._puts_unchecked + 1 >= CHECK_EVERY
        total = await self._hot.cache_put((key, node_type, text, cost, size, convert.utcnow()),
                                          self.cache_max_bytes if due else None)
        if total is not None:
            self._cache_estimate, self._puts_unchecked = total, 0
        else:
            self._cache_estimate, self._puts_unchecked = (estimate or 0) + size, self._puts_unchecked + 1

    async def cache_evict(self) -> int:
        """Evict down to ``cache_max_bytes`` now, whatever the estimate says; the total left."""
        total = await self._hot.cache_evict(self.cache_max_bytes)
        self._cache_estimate, self._puts_unchecked = total, 0
        return total

    async def cache_has(self, keys: Iterable[str]) -> set[str]:
        """Which of ``keys`` the cache holds, changing nothing (a plan's ``cached``: it writes nothing)."""
        wanted = list(dict.fromkeys(keys))
        found: set[str] = set()
        async with self._read() as conn:
            for start in range(0, len(wanted), 500):
                batch = wanted[start:start + 500]
                found.update((await conn.execute(sa.select(cache_t.c.key).where(cache_t.c.key.in_(batch)))).scalars())
        return found

    async def cache_size(self) -> tuple[int, int]:
        """How many entries the cache holds and their total size in bytes."""
        async with self._read() as conn:
            row = (await conn.execute(sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(cache_t.c.size), 0))
                                      .select_from(cache_t))).one()
        return int(row[0]), int(row[1])


class StoredOutputCache:
    """:class:`graph_runtime.ports.OutputCache` on a repository (``Executor(cache=…)``), with the
    outputs this process used last kept in memory too (up to ``memory_bytes``).

    A hit served from memory costs no database read: a key names one type, version and set of
    parameters, whose output never changes, so a kept copy cannot go stale. It is still marked
    used in the database (every ``cache_touch_after_s``), so the stored LRU order stays right for
    every process.
    """

    def __init__(self, repo: NodeCacheMethods, memory_bytes: int = 16 * 1024**2) -> None:
        self.repo = repo
        self._memory_bytes = memory_bytes
        self._recent: OrderedDict[str, tuple[dict[str, Any], float, int, float]] = OrderedDict()
        self._held = 0

    async def get(self, key: str) -> tuple[dict[str, Any], float] | None:
        """See :meth:`NodeCacheMethods.cache_get`."""
        kept = self._recent.get(key)
        if kept is None:
            found = await self.repo.cache_get(key)
            if found is not None:
                self._keep(key, found[0], found[1])
            return found
        output, cost, size, touched = kept
        self._recent.move_to_end(key)
        if time.monotonic() - touched >= self.repo.cache_touch_after_s:
            self._recent[key] = (output, cost, size, time.monotonic())
            if await self.repo.cache_get(key) is None:  # evicted meanwhile: it is stored again by the next run
                self._forget(key)
                return None
        return output, cost

    async def put(self, key: str, node_type: str, output: dict[str, Any], cost: float) -> None:
        """See :meth:`NodeCacheMethods.cache_put`."""
        await self.repo.cache_put(key, node_type, output, cost)
        self._keep(key, output, cost)

    @property
    def memory_bytes(self) -> int:
        return min(self._memory_bytes, self.repo.cache_max_bytes)  # never more than the cache's own bound

    def _keep(self, key: str, output: dict[str, Any], cost: float) -> None:
        if codec.size_exceeds(output, self.memory_bytes // 16):
            return  # a large output stays in the database only: memory is for the many small ones
        size = len(codec.dumps(output))
        self._forget(key)
        self._recent[key] = (output, cost, size, time.monotonic())
        self._held += size
        while self._held > self.memory_bytes and self._recent:
            self._forget(next(iter(self._recent)))

    def _forget(self, key: str) -> None:
        kept = self._recent.pop(key, None)
        if kept is not None:
            self._held -= kept[2]
