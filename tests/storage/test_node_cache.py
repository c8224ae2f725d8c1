"""The output cache's store (SPEC §9) on SQLite and PostgreSQL: get/put, LRU eviction by bytes,
concurrent puts of one key."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
import sqlalchemy as sa

from graph_runtime.flow import Flow
from graph_runtime.models import NodeRun, NodeStatus, TaskRequest
from nodes import codec
from storage.node_cache import StoredOutputCache
from storage.repository import Repository
from storage.tables import node_cache


@pytest.fixture
async def cache_repo(make_repository: Callable[[], Repository]) -> Repository:
    repo = make_repository()
    async with repo.engine.begin() as conn:  # the shared PostgreSQL database keeps rows between tests
        await conn.execute(sa.delete(node_cache))
    return repo


def _size(output: dict[str, object]) -> int:
    return len(codec.dumps(output))


async def test_a_put_output_is_got_back_with_its_cost(cache_repo: Repository) -> None:
    cache = StoredOutputCache(cache_repo)
    assert await cache.get("a" * 64) is None
    await cache.put("a" * 64, "template", {"text": "héllo", "n": [1, 2]}, 0.25)
    assert await cache.get("a" * 64) == ({"text": "héllo", "n": [1, 2]}, 0.25)
    await cache.put("a" * 64, "template", {"text": "again"}, 0.5)  # replaced, not a second row
    assert await cache.get("a" * 64) == ({"text": "again"}, 0.5)
    assert await cache_repo.cache_size() == (1, _size({"text": "again"}))


async def test_eviction_drops_the_least_recently_hit_until_within_the_bound(cache_repo: Repository) -> None:
    cache = StoredOutputCache(cache_repo)
    outputs = {key: {"text": key * 20} for key in "abcd"}
    entry = _size(outputs["a"])
    cache_repo.cache_max_bytes, cache_repo.cache_touch_after_s = 3 * entry, 0.0
    for key in "abc":
        await cache.put(key, "template", outputs[key], 1.0)
        await asyncio.sleep(0.002)  # distinct last_hit times
    assert await cache.get("a") is not None  # "a" is now the most recently used; "b" the least
    await asyncio.sleep(0.002)
    await cache.put("d", "template", outputs["d"], 1.0)
    assert await cache.get("b") is None
    for key in "acd":
        assert await cache.get(key) == (outputs[key], 1.0)
    count, total = await cache_repo.cache_size()
    assert (count, total) == (3, 3 * entry)


async def test_a_hit_moves_last_hit_only_when_it_is_older_than_a_minute(cache_repo: Repository) -> None:
    cache = StoredOutputCache(cache_repo)
    await cache.put("k", "pick", {"value": 1}, 0.0)

    async def last_hit() -> object:
        async with cache_repo.engine.connect() as conn:
            return (await conn.execute(sa.select(node_cache.c.last_hit))).scalar_one()

    filled = await last_hit()
    await asyncio.sleep(0.002)
    assert await cache.get("k") is not None and await last_hit() == filled  # a read only
    cache_repo.cache_touch_after_s = 0.0
    assert await cache.get("k") is not None and await last_hit() > filled  # type: ignore[operator]


async def test_an_output_larger_than_the_bound_is_not_kept(cache_repo: Repository) -> None:
    cache = StoredOutputCache(cache_repo)
    cache_repo.cache_max_bytes = 50
    await cache.put("small", "pick", {"value": 1}, 0.0)
    await cache.put("big", "pick", {"value": "x" * 100}, 0.0)
    assert await cache.get("big") is None
    assert await cache.get("small") == ({"value": 1}, 0.0)


async def test_concurrent_puts_from_two_processes_all_succeed(make_repository: Callable[[], Repository],
                                                              cache_repo: Repository) -> None:
    other = make_repository()
    cache_repo.cache_max_bytes = other.cache_max_bytes = 10 * _size({"value": 0})
    puts = [StoredOutputCache(repo).put(f"k{i % 12}", "merge", {"value": i % 12}, 0.1)
            for i in range(40) for repo in (cache_repo, other)]
    await asyncio.gather(*puts)  # no deadlock, no error
    count, total = await cache_repo.cache_size()
    assert count <= 12
    # Each process evicts on its own estimate: the other's puts show at its next check.
    assert await cache_repo.cache_evict() <= cache_repo.cache_max_bytes
    count, total = await cache_repo.cache_size()
    assert count <= 10 and total <= cache_repo.cache_max_bytes
    for i in range(12):
        found = await StoredOutputCache(other).get(f"k{i}")
        assert found is None or found == ({"value": i}, 0.1)


async def test_node_runs_keep_cached_and_saved_cost(repo: Repository, saved_flow: Callable[..., Awaitable[Flow]]) -> None:
    await saved_flow("f")
    task, _ = await repo.create_task("f", 1, TaskRequest("start", "end", "end"))
    run = NodeRun("start", NodeStatus.SUCCEEDED, cost=0.0, output={"x": 1}, cached=True, saved_cost=0.75)
    await repo.save_node_runs(task.id, [run, NodeRun("end")])
    nodes = (await repo.get_task(task.id)).nodes
    assert (nodes["start"].cached, nodes["start"].saved_cost) == (True, 0.75)
    assert (nodes["end"].cached, nodes["end"].saved_cost) == (False, None)


async def test_one_process_stays_within_the_bound_put_after_put(cache_repo: Repository) -> None:
    cache = StoredOutputCache(cache_repo)
    cache_repo.cache_max_bytes = 5 * _size({"value": 10}) + 3
    for i in range(10, 90):
        await cache.put(f"k{i}", "pick", {"value": i}, 0.0)
        count, total = await cache_repo.cache_size()
        assert total <= cache_repo.cache_max_bytes and count == min(5, i - 9)
    assert await cache.get("k89") is not None and await cache.get("k84") is None


async def test_cache_has_tells_which_keys_are_held_without_touching_them(cache_repo: Repository) -> None:
    await StoredOutputCache(cache_repo).put("held", "pick", {"value": 1}, 0.0)
    assert await cache_repo.cache_has(["held", "not", "held"]) == {"held"}
    assert await cache_repo.cache_has([]) == set()
