"""The Prefect 3 reference, run in a process of its own: ``python -m bench.prefect_ref < plan.json``.

The same graphs as the other engines, one Prefect task per node inside an async flow (the nodes
of a wide graph run concurrently under asyncio). Prefect runs in ephemeral mode: no
``PREFECT_API_URL``, so its client starts its own API server as a subprocess on 127.0.0.1 with
a SQLite database under ``PREFECT_HOME`` (a temporary directory); telemetry and analytics off
(:func:`environment`). Nothing leaves the machine.

Reads a plan (``{"items": [{"key", "kind", "size", "flows", "repeats"}]}``) on stdin and writes one
JSON object per line on stdout: ``{"ready": s}`` after the untimed first flow (which starts the
server), then ``{"key", "value"}`` per repeat, ``value`` being seconds per flow over ``flows``
sequential flows, and ``{"done": true}``.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from bench import cases
from bench.references import check_result, merge_or_source


def environment(home: Path) -> dict[str, str]:
    """This environment for a Prefect child: ephemeral server, telemetry off, quiet, loopback only."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PREFECT_", "GRAPH_RUNTIME_")) or k == "PREFECT_HOME"}
    env.update({
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_EPHEMERAL_ENABLED": "true",  # start the local API server when no API URL is set
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",  # the server's anonymous start-up report
        "DO_NOT_TRACK": "1",  # the client's SDK telemetry
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "WARNING",  # no per-task console line (it would cost Prefect time)
        "PREFECT_TELEMETRY_ENABLE_RESOURCE_METRICS": "false",
        "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
        "PYTHONUNBUFFERED": "1",
    })
    return env


def _flows() -> Any:
    """Prefect's flow and task, defined only in this process (importing prefect is heavy)."""
    from prefect import flow, task

    @task
    async def node(inputs: dict[str, Any]) -> dict[str, Any]:
        return merge_or_source(inputs)

    @flow
    async def run_graph(kind: str, size: int) -> dict[str, Any]:
        graph = cases.Shape(kind, size).graph()
        import networkx as nx

        order = list(nx.topological_sort(graph))
        running: dict[str, asyncio.Task[dict[str, Any]]] = {}

        async def one(node_id: str) -> dict[str, Any]:
            inputs = {graph.edges[p, node_id]["input"]: await running[p] for p in graph.predecessors(node_id)}
            return await node(inputs)

        for node_id in order:
            running[node_id] = asyncio.ensure_future(one(node_id))
        await asyncio.gather(*running.values())
        return running[order[-1]].result()

    return run_graph


async def _main(plan: dict[str, Any]) -> None:
    run_graph = _flows()
    started = time.perf_counter()
    check_result(await run_graph("deep", 3))
    _emit({"ready": time.perf_counter() - started})
    for item in plan["items"]:
        for _ in range(item["repeats"]):
            started = time.perf_counter()
            for _ in range(item["flows"]):
                check_result(await run_graph(item["kind"], item["size"]))
            _emit({"key": item["key"], "value": (time.perf_counter() - started) / item["flows"]})
    _emit({"done": True})


def _emit(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    asyncio.run(_main(json.load(sys.stdin)))
