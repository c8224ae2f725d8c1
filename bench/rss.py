"""Peak memory, each measure in a fresh process: ``python -m bench.rss MODE N WORKDIR``.

Modes:

- ``ours-task``: our engine (as ``graph-runtime run`` drives it) runs one task of ``wide-N``.
- ``ours-queued``: ``N`` tasks of the 10-node chain are submitted to our engine and stay queued
  (no worker claims them, as when every slot of a server is busy).
- ``naive-task`` / ``naive-queued``: the same with the naive durable reference.
- ``floor-task``: the plain asyncio + networkx floor runs ``wide-N``.

Prints one JSON line: ``peak_mb`` (the process's peak resident set, ``VmHWM``) and
``baseline_mb`` (the peak once everything was imported and opened, before the work).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from bench import cases

MODES = ("ours-task", "ours-queued", "naive-task", "naive-queued", "floor-task")


def peak_mb() -> float:
    """This process's peak resident set so far, in MiB.

    ``VmHWM`` from /proc (Linux), not ``ru_maxrss``: after fork + exec a child's ``ru_maxrss``
    starts at its parent's peak, which would report the suite's own memory.
    """
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    raise RuntimeError("no VmHWM in /proc/self/status")


async def _ours(mode: str, n: int, workdir: Path) -> dict[str, Any]:
    from bench.inprocess import OurEngine

    engine = await OurEngine.open(workdir / "ours.db")
    try:
        shape = cases.Shape("wide", n) if mode == "ours-task" else cases.Shape("deep", 10)
        await engine.install(shape)
        baseline = peak_mb()
        started = time.perf_counter()
        if mode == "ours-task":
            await engine.run_flow(shape)
        else:
            for _ in range(n):
                await engine.submit(shape)
        return {"baseline_mb": baseline, "seconds": time.perf_counter() - started}
    finally:
        await engine.close()


async def _references(mode: str, n: int, workdir: Path) -> dict[str, Any]:
    from bench.references import Floor, NaiveDurable, check_result, open_naive_db

    shape = cases.Shape("wide", n) if mode.endswith("-task") else cases.Shape("deep", 10)
    conn = await open_naive_db(workdir / "naive.db")
    try:
        engine = Floor(shape.graph()) if mode == "floor-task" else NaiveDurable(shape.graph(), conn, shape.flow_id)
        baseline = peak_mb()
        started = time.perf_counter()
        if mode.endswith("-task"):
            check_result(await engine.run_flow())
        else:
            assert isinstance(engine, NaiveDurable)
            for _ in range(n):
                await engine.queue_task()
        return {"baseline_mb": baseline, "seconds": time.perf_counter() - started}
    finally:
        await conn.close()


def main(argv: list[str]) -> None:
    mode, n, workdir = argv[0], int(argv[1]), Path(argv[2])
    if mode not in MODES:
        raise SystemExit(f"mode must be one of {', '.join(MODES)}")
    workdir.mkdir(parents=True, exist_ok=True)
    measure = _ours if mode.startswith("ours") else _references
    found = asyncio.run(measure(mode, n, workdir))
    print(json.dumps({"mode": mode, "n": n, "peak_mb": peak_mb(), **found}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
