"""What metrics and tracing cost: the 10-node chain with them on (an SDK tracer, no exporter) and off.

Both engines run in this process on SQLite files of their own, with the output cache off (every
node really runs: the worst case for an overhead measured per node). "On" is the server's set-up:
the executor's listener feeding the Prometheus metrics and a span per task and node on an
OpenTelemetry SDK ``TracerProvider`` with no span processor (the spans are made, then dropped),
the SQL statement timing hook, and the task's end reported as the scheduler reports it. Rounds
alternate off/on, so a drift of the machine's speed touches both alike; the figure is the
median per-flow time over the rounds.

Standalone: ``python -m bench.telemetry [FLOWS_PER_ROUND] [ROUNDS]`` prints the figures as JSON.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import cases
from bench.inprocess import OurEngine
from graph_runtime.models import NodeRun
from http_api import heap
from http_api.app import open_services
from http_api.metrics import Metrics
from http_api.settings import Settings
from http_api.telemetry import Telemetry

CHAIN = cases.Shape("deep", 10)
TARGET_PCT = 5.0


def _recording(ratio: float = 1.0) -> Telemetry:
    from opentelemetry.sdk.trace import TracerProvider  # the otel extra (the bench measures it on)
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    from http_api.tracing import Tracing

    return Telemetry(Metrics(), Tracing(TracerProvider(sampler=ParentBased(TraceIdRatioBased(ratio)))))


# What is measured against "off" (no telemetry object at all), each on a database of its own.
SETUPS: dict[str, Callable[[], Telemetry]] = {
    # the server as it starts without an OpenTelemetry SDK set up: metrics (tracing stays off)
    "on": Telemetry.create,
    # every span made and recorded by the SDK (no exporter): what opentelemetry-instrument adds before export
    "on_sdk": _recording,
    # the same sampling one trace in ten (OTEL_TRACES_SAMPLER=parentbased_traceidratio, ARG=0.1)
    "on_sdk_10pct": lambda: _recording(0.1),
}


async def _engine(db_path: Path, telemetry: Telemetry | None) -> OurEngine:
    settings = Settings(database_url=f"sqlite+aiosqlite:///{db_path}", flows_dir=None, log_level="WARNING",
                        cache_max_bytes=0)
    engine = OurEngine(await open_services(settings, telemetry=telemetry))
    await engine.install(CHAIN)
    return engine


async def _round(engine: OurEngine, flows: int) -> tuple[float, float]:
    """Wall and CPU seconds per flow over ``flows`` chains run one after another."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(flows):
        await engine.run_flow(CHAIN)  # its end reaches the telemetry through the events hub, as in a server
    return (time.perf_counter() - wall) / flows, (time.process_time() - cpu) / flows


async def measure(flows: int = 200, rounds: int = 7, workdir: Path | None = None) -> dict[str, Any]:
    """Median ms per chain for each set-up, and each one's overhead over "off" in percent."""
    with tempfile.TemporaryDirectory(prefix="graph-runtime-telemetry-") as scratch:
        base = workdir or Path(scratch)
        telemetry = {name: make() for name, make in SETUPS.items()}
        engines = {"off": await _engine(base / "off.db", None)}
        for name, setup in telemetry.items():
            engines[name] = await _engine(base / f"{name}.db", setup)
        heap.settle()
        wall: dict[str, list[float]] = {name: [] for name in engines}
        cpu: dict[str, list[float]] = {name: [] for name in engines}
        try:
            for engine in engines.values():
                await _round(engine, 20)  # warm-up, untimed
            names = list(engines)
            for index in range(rounds):
                for name in names[index % len(names):] + names[:index % len(names)]:  # the order rotates
                    seconds, cpu_seconds = await _round(engines[name], flows)
                    wall[name].append(seconds)
                    cpu[name].append(cpu_seconds)
        finally:
            for engine in engines.values():
                await engine.close()
    result: dict[str, Any] = {"flows_per_round": flows, "rounds": rounds, "target_pct": TARGET_PCT}
    for name, setup in telemetry.items():
        assert setup.metrics.tasks.labels(CHAIN.flow_id, "succeeded")._value.get() > 0, name  # the path really ran
        result[name] = {**_figures("wall", wall["off"], wall[name]), **_figures("cpu", cpu["off"], cpu[name])}
    return result


def _figures(kind: str, off: list[float], on: list[float]) -> dict[str, float]:
    # The median of the per-round ratios: the rounds of one index ran back to back, under the same load.
    ratios = [b / a for a, b in zip(off, on, strict=True)]
    return {f"{kind}_off_ms_per_flow": round(statistics.median(off) * 1000, 4),
            f"{kind}_on_ms_per_flow": round(statistics.median(on) * 1000, 4),
            f"{kind}_overhead_pct": round((statistics.median(ratios) - 1) * 100, 2)}


async def listener_cost(flows: int = 500, rounds: int = 8) -> dict[str, Any]:
    """The telemetry's own CPU per chain, without the chain: one chain's node events (and its stop, as the
    events hub reports it) handed to each set-up's watchers ``flows`` times a round, as new tasks, the
    set-ups' order rotating each round; the median round per set-up. Steadier than the difference of two
    end-to-end figures on a busy machine. Only the telemetry runs (not the hub's own rendering of
    events, which runs with or without it); the statement hook is not in it."""
    with tempfile.TemporaryDirectory(prefix="graph-runtime-telemetry-") as scratch:
        recorder = await _engine(Path(scratch) / "record.db", None)
        events: list[NodeRun] = []
        unwatch = recorder.services.events.watch_nodes(lambda task, run: events.append(run.copy()))
        done = await recorder.run_flow(CHAIN)
        unwatch()  # one chain's events: the timed chains below add none
        chain_cpu = [(await _round(recorder, 50))[1] for _ in range(5)]
        await recorder.close()
        setups: dict[str, tuple[Telemetry, OurEngine]] = {}
        for name, make in SETUPS.items():
            setup = make()
            setups[name] = setup, await _engine(Path(scratch) / f"replay-{name}.db", setup)
            await setups[name][1].run_flow(CHAIN)  # a real chain first: the node types are read once, here
        await asyncio.sleep(0.05)
        cpu: dict[str, list[float]] = {name: [] for name in setups}
        next_id = done.id + 1000
        names = list(setups)
        for index in range(rounds):
            for name in names[index % len(names):] + names[:index % len(names)]:
                setup = setups[name][0]
                started = time.process_time()
                for task_id in range(next_id, next_id + flows):
                    task = dataclasses.replace(done, id=task_id)
                    for run in events:
                        setup.node_changed(task, run)
                    setup.task_stopped(task)
                cpu[name].append((time.process_time() - started) / flows)
                next_id += flows
                await asyncio.sleep(0)  # anything the watchers scheduled runs, as on a live loop
        for _, engine in setups.values():
            await engine.close()
    chain = statistics.median(chain_cpu)
    result: dict[str, Any] = {"chain_cpu_ms_per_flow": round(chain * 1000, 4), "flows_per_round": flows,
                              "rounds": rounds}
    for name, per_flow in cpu.items():
        result[name] = {"cpu_ms_per_flow": round(statistics.median(per_flow) * 1000, 4),
                        "pct_of_chain": round(statistics.median(per_flow) / chain * 100, 2)}
    return result


def main(argv: list[str]) -> int:
    flows = int(argv[0]) if argv else 200
    rounds = int(argv[1]) if len(argv) > 1 else 7
    figures = {"end_to_end": asyncio.run(measure(flows, rounds)), "listener_replayed": asyncio.run(listener_cost())}
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
