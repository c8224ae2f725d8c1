"""Issue 10's figures: the output cache, the plan and ``map``, each next to a same-run reference.

- ``cache-flow``: a chain run again with every ``merge`` node a cache hit, against the same chain
  with the cache off (two engines, same process, runs alternating).
- ``cache-hit``: what a cached node costs inside a task: a longer chain, every ``merge`` a hit,
  per node (the task's own overhead included, so an upper bound); the bare lookup is noted.
- ``plan`` / ``plan-http``: ``POST /flow/{id}/plan`` of a 1,000-node flow in process (the
  request's checks and the dry run) and over loopback HTTP through the production app; the first
  plan of a new revision (nothing kept yet) and the plans after it.
- ``map``: ``map`` over N trivial items against a wide flow of N trivial nodes, per item / node
  (same engine, cache off: ``merge`` is deterministic, and a repeated run would time cache hits).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import networkx as nx
from aiohttp import web

from bench.cases import Case, Shape, Sizes
from bench.figures import Figure
from bench.inprocess import LEASE_S, WORKER, OurEngine
from bench.references import Floor
from bench.results import FLOOR, OURS, Row, Target
from graph_runtime import flow as flows
from graph_runtime import validation
from graph_runtime.executor import Control
from graph_runtime.models import Claim, TaskStatus
from http_api import auth, planning
from http_api.app import create_app
from http_api.body import SERVICES
from http_api.schemas import ExecuteBody
from http_api.services import Services, check, submit
from http_api.settings import Settings

Run = Callable[[], Awaitable[Any]]


async def timed(run: Run, times: int = 1) -> tuple[float, float]:
    """Wall and process CPU seconds per call of ``run``, over ``times`` calls back to back.

    On a shared machine the wall time holds the time others' processes had the cores; the CPU
    time (this process's threads) is close to what a quiet machine's wall time would be, since
    everything here runs on the event loop and SQLite in WAL mode does not wait for the disk.
    """
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(times):
        await run()
    return (time.perf_counter() - wall) / times, (time.process_time() - cpu) / times


Figures = dict[str, Figure]


async def alternate(runs: dict[str, Run], repeats: int, times: int, scale: float, unit: str) -> tuple[Figures, Figures]:
    """Each run once untimed, then ``repeats`` rounds taking turns (the order rotates): wall and CPU
    seconds per call × ``scale``."""
    wall, cpu = {name: Figure(unit) for name in runs}, {name: Figure(unit) for name in runs}
    for run in runs.values():
        await run()
    names = list(runs)
    for repeat in range(repeats):
        for name in names[repeat % len(names):] + names[:repeat % len(names)]:
            took = await timed(runs[name], times)
            wall[name].add(took[0] * scale)
            cpu[name].add(took[1] * scale)
    return wall, cpu


def ratio(ours: Figure, reference: Figure) -> float | None:
    return ours.median / reference.median if ours.median and reference.median else None


async def measure_cache(sizes: Sizes, workdir: Path, flow_case: Case, hit_case: Case) -> list[Row]:
    cached = await OurEngine.open(workdir / "cache-on.db", cache=True)
    plain = await OurEngine.open(workdir / "cache-off.db")
    try:
        chain, long = Shape("deep", sizes.chain, "template"), Shape("deep", sizes.cache_chain)
        trivial = Shape("deep", sizes.chain)
        for shape in (chain, long, trivial):
            await cached.install(shape)
            await plain.install(shape)
        flows_per_sample = max(1, sizes.sequential_flows // 5)
        short, short_cpu = await alternate({"cached": lambda: cached.run_flow(chain), "off": lambda: plain.run_flow(chain),
                                            FLOOR: Floor(chain.graph()).run_flow}, sizes.repeats, flows_per_sample, 1e3,
                                           "ms/flow")
        # The same with nodes that do nothing: what a hit saves is then only the engine's own per-node work.
        bare, _ = await alternate({"cached": lambda: cached.run_flow(trivial), "off": lambda: plain.run_flow(trivial)},
                                  sizes.repeats, flows_per_sample, 1e3, "ms/flow")
        done = await cached.run_flow(chain)
        hits = sum(run.cached for run in done.nodes.values())
        per_node, per_node_cpu = await alternate({"cached": lambda: cached.run_flow(long),
                                                  FLOOR: Floor(long.graph()).run_flow},
                                                 sizes.repeats, 1, 1e3 / long.node_count, "ms/node")
        lookup_us = await _lookup_us(cached)
    finally:
        await cached.close()
        await plain.close()
    flow_row = Row(flow_case, "ms/flow", figures={OURS: short["cached"], FLOOR: short[FLOOR]},
                   extra={"cache off ms/flow": short["off"].samples, "hits per flow": hits,
                          "CPU ms/flow": {name: f.samples for name, f in short_cpu.items()}})
    off, off_cpu = short["off"].median or 0.0, short_cpu["off"].median or 0.0
    flow_row.targets.append(Target(f"cached ÷ cache off ({off:.2f} ms/flow, same run) ≤ 0.5",
                                   ratio(short["cached"], short["off"]), 0.5))
    flow_row.targets.append(Target(f"the same in process CPU ({short_cpu['cached'].median or 0:.2f} ÷ {off_cpu:.2f} ms)",
                                   ratio(short_cpu["cached"], short_cpu["off"]), 0.5))
    flow_row.notes.append(f"{hits} of {chain.node_count} nodes hits (the start node is not cacheable), each a "
                          f"template rendering its input; cache off = a second engine with CACHE_MAX_BYTES=0; "
                          f"{flows_per_sample} flows per run; with merge nodes that do nothing: "
                          f"{bare['cached'].median or 0:.2f} ÷ {bare['off'].median or 0:.2f} ms = "
                          f"{ratio(bare['cached'], bare['off']) or 0:.2f}")
    flow_row.extra["merge chain ms/flow"] = {name: f.samples for name, f in bare.items()}
    hit_row = Row(hit_case, "ms/node", figures={OURS: per_node["cached"], FLOOR: per_node[FLOOR]},
                  extra={"bare lookup µs": lookup_us, "CPU ms/node": per_node_cpu["cached"].samples})
    hit_row.targets.append(Target("≤ 0.2 ms per cached node", per_node["cached"].median, 0.2))
    hit_row.targets.append(Target("the same in process CPU", per_node_cpu["cached"].median, 0.2))
    hit_row.notes.append(f"a {long.node_count}-node chain, every merge a hit, whole task ÷ nodes (node-run rows "
                         f"and the task's own cost included); the bare key + lookup: {lookup_us:.0f} µs")
    return [flow_row, hit_row]


async def _lookup_us(engine: OurEngine) -> float:
    """µs per ``get`` of a held key on the engine's own cache (what the executor calls per node)."""
    cache = engine.services.executor.cache
    assert cache is not None
    await cache.put("bench-key", "merge", {"x": 1}, 0.0)
    calls = 500
    began = time.perf_counter()
    for _ in range(calls):
        await cache.get("bench-key")
    return (time.perf_counter() - began) / calls * 1e6


async def measure_plan(sizes: Sizes, workdir: Path, case: Case) -> Row:
    shape = Shape("wide", sizes.plan_nodes - 2)
    engine = await OurEngine.open(workdir / "plan.db", cache=True)
    try:
        async def plan_once() -> None:
            checked = await check(engine.services, shape.flow_id, ExecuteBody())
            await planning.dry_run(engine.services, checked)

        first, first_cpu = Figure("ms"), Figure("ms")
        for revision in range(sizes.repeats):
            await _store(engine, shape, revision)
            took = await timed(plan_once)  # the revision's first plan: nothing kept yet
            first.add(took[0] * 1e3)
            first_cpu.add(took[1] * 1e3)
        figures, cpu = await alternate({OURS: plan_once, FLOOR: _levels_floor(shape)}, sizes.repeats, 5, 1e3, "ms")
    finally:
        await engine.close()
    return _plan_row(case, shape, (figures, cpu), (first, first_cpu), "check + dry run, no HTTP")


async def _store(engine: OurEngine, shape: Shape, revision: int) -> None:
    """A new revision, stored as every way in does it (PUT, the flows directory, `flows push`): validated first."""
    definition = {**shape.flow_definition(), "name": f"bench {shape.name} r{revision}"}
    services = engine.services
    await services.repo.save_flow(validation.validate(flows.parse(definition), services.registry))


def _levels_floor(shape: Shape) -> Run:
    """The least a plan does: networkx's topological generations of the same graph, built each time."""
    definition = shape.flow_definition()

    async def run() -> None:
        graph: nx.DiGraph = nx.DiGraph()
        graph.add_edges_from((edge["from"], edge["to"]) for edge in definition["edges"])
        list(nx.topological_generations(graph))

    return run


def _plan_row(case: Case, shape: Shape, later: tuple[Figures, Figures], first: tuple[Figure, Figure], how: str) -> Row:
    (figures, cpu), (first_wall, first_cpu) = later, first
    row = Row(case, "ms", figures={OURS: figures[OURS], FLOOR: figures[FLOOR]},
              extra={"first plan of a revision ms": first_wall.samples, "first plan CPU ms": first_cpu.samples,
                     "plans after it CPU ms": cpu[OURS].samples, "nodes": shape.node_count})
    row.targets += [Target("first plan of a revision ≤ 20 ms", first_wall.median, 20.0),
                    Target("in process CPU", first_cpu.median, 20.0),
                    Target("plans after it ≤ 20 ms", figures[OURS].median, 20.0),
                    Target("in process CPU", cpu[OURS].median, 20.0)]
    row.notes.append(f"{shape.node_count} nodes ({shape.name}); {how}; the first plan of a revision checks every "
                     f"node's settings, later ones reuse the selection; floor = {_FLOORS[case.name]}")
    return row


_FLOORS = {"plan": "networkx topological generations of the graph", "plan-http": "GET /healthz on the same server"}


async def measure_plan_http(sizes: Sizes, workdir: Path, case: Case) -> Row:
    shape = Shape("wide", sizes.plan_nodes - 2)
    settings = Settings(database_url=f"sqlite+aiosqlite:///{workdir / 'plan-http.db'}", flows_dir=None,
                        log_level="WARNING")
    runner = web.AppRunner(create_app(settings), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        services: Services = runner.app[SERVICES]  # type: ignore[assignment]
        _, token = await auth.issue_key(services.repo, "bench", "admin")
        headers = {"Authorization": f"Basic {token}"}
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}", headers=headers) as http:
            async def plan_once() -> None:
                async with http.post(f"/api/v1/flow/{shape.flow_id}/plan", json={}) as response:
                    if response.status != 200:
                        raise RuntimeError(f"plan answered {response.status}: {await response.text()}")
                    await response.read()

            async def health() -> None:
                async with http.get("/healthz") as response:
                    await response.read()

            first, first_cpu = Figure("ms"), Figure("ms")
            for revision in range(sizes.repeats):
                definition = {**shape.flow_definition(), "name": f"bench {shape.name} r{revision}"}
                async with http.put(f"/api/v1/flows/{shape.flow_id}", json=definition) as response:
                    if response.status not in (200, 201):
                        raise RuntimeError(f"PUT flow answered {response.status}: {await response.text()}")
                took = await timed(plan_once)
                first.add(took[0] * 1e3)
                first_cpu.add(took[1] * 1e3)
            later = await alternate({OURS: plan_once, FLOOR: health}, sizes.repeats, 5, 1e3, "ms")
    finally:
        await runner.cleanup()
    return _plan_row(case, shape, later, (first, first_cpu),
                     "the production app on loopback, client in the same process (CPU: both)")


def map_definition(items: int) -> dict[str, Any]:
    """start → end ← map over ``items`` numbers, each item a ``merge`` node (trivial, as the wide flow's)."""
    return {"id": "bench-map", "name": f"bench map x{items}",
            "nodes": [{"id": "s", "type": "start", "settings": {"data": {"x": 1}}},
                      {"id": "m", "type": "map", "settings": {"items": list(range(items)),
                                                              "node": {"type": "merge", "settings": {}}}},
                      {"id": "e", "type": "end"}],
            "edges": [{"from": "s", "to": "e", "input": "s"}, {"from": "m", "to": "e", "input": "m"}]}


async def measure_map(sizes: Sizes, workdir: Path, case: Case) -> Row:
    items, wide = sizes.map_items, Shape("wide", sizes.map_items)
    engine = await OurEngine.open(workdir / "map.db")
    try:
        await engine.install(wide)
        await engine.services.repo.save_flow(flows.parse(map_definition(items)))

        async def run_map() -> None:
            task, _ = await submit(engine.services, "bench-map", ExecuteBody(), raw_body={}, claim=Claim(WORKER, LEASE_S))
            done = await engine.services.executor.execute(task, Control())
            results = (done.result or {}).get("m", {}).get("results")
            if done.status is not TaskStatus.SUCCEEDED or results != [{"item": i} for i in range(items)]:
                raise AssertionError(f"the map task ended {done.status.value}: {done.error or results}")

        flows_s, cpu_s = await alternate({OURS: run_map, "wide": lambda: engine.run_flow(wide),
                                          FLOOR: Floor(wide.graph()).run_flow}, sizes.repeats, 1, 1e6, "µs/flow")
    finally:
        await engine.close()

    def per(figure: Figure, count: int, unit: str) -> Figure:
        return Figure(unit, [v / count for v in figure.samples])

    per_item, per_item_cpu = per(flows_s[OURS], items, "µs/item"), per(cpu_s[OURS], items, "µs/item")
    wide_node, wide_cpu = per(flows_s["wide"], wide.node_count, "µs/node"), per(cpu_s["wide"], wide.node_count, "µs/node")
    row = Row(case, "µs/item", figures={OURS: per_item, FLOOR: per(flows_s[FLOOR], wide.node_count, "µs/node")},
              extra={"wide µs/node": wide_node.samples, "CPU µs/item": per_item_cpu.samples,
                     "wide CPU µs/node": wide_cpu.samples, "items": items})
    row.targets.append(Target(f"per item ÷ per node of {wide.name} ({wide_node.median or 0:.0f} µs, same run) ≤ 2",
                              ratio(per_item, wide_node), 2.0))
    row.targets.append(Target(f"the same in process CPU ({per_item_cpu.median or 0:.0f} ÷ {wide_cpu.median or 0:.0f} µs)",
                              ratio(per_item_cpu, wide_cpu), 2.0))
    row.notes.append(f"map over {items} numbers, each a merge node run (recorded as m[i]) vs {wide.name} of merge nodes "
                     f"({wide.node_count} nodes), same engine, cache off, runs alternating; floor = the floor's {wide.name}")
    return row
