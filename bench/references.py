"""The floor references: the same graph on plain asyncio + networkx, bare and naively durable.

``Floor`` runs one asyncio task per node; a node awaits its predecessors' outputs, merges them and
publishes its own. ``NaiveDurable`` is the same with one aiosqlite autocommit write per state
change — task start and end, node start and end (WAL, synchronous=NORMAL) — each awaited before
the node's output is published, so a node's result is on disk before its successors start.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiosqlite
import networkx as nx

from bench import cases

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS task (id INTEGER PRIMARY KEY, flow TEXT NOT NULL, status TEXT NOT NULL,"
    " created REAL NOT NULL, finished REAL, result TEXT)",
    "CREATE TABLE IF NOT EXISTS node_run (task_id INTEGER NOT NULL, node_id TEXT NOT NULL, status TEXT NOT NULL,"
    " started REAL, finished REAL, output TEXT, PRIMARY KEY (task_id, node_id))",
)


class Floor:
    """Plain asyncio + networkx: one task per node, nothing stored."""

    name = "floor"

    def __init__(self, graph: nx.DiGraph) -> None:
        self.graph = graph
        self.order = list(nx.topological_sort(graph))
        self.inputs = {n: [(p, graph.edges[p, n]["input"]) for p in graph.predecessors(n)] for n in self.order}
        self.sink = self.order[-1]

    async def run_flow(self) -> dict[str, Any]:
        """Run the graph once; the sink's output."""
        task_id = await self.task_started()
        loop = asyncio.get_running_loop()
        outputs: dict[str, asyncio.Future[dict[str, Any]]] = {n: loop.create_future() for n in self.order}
        runners = [asyncio.create_task(self._node(task_id, n, outputs)) for n in self.order]
        await asyncio.gather(*runners)
        result = outputs[self.sink].result()
        await self.task_finished(task_id, result)
        return result

    async def _node(self, task_id: int, node_id: str, outputs: dict[str, asyncio.Future[dict[str, Any]]]) -> None:
        inputs = {name: await outputs[p] for p, name in self.inputs[node_id]}
        await self.node_started(task_id, node_id)
        output = merge_or_source(inputs)
        await self.node_finished(task_id, node_id, output)
        outputs[node_id].set_result(output)

    async def task_started(self) -> int:
        return 0

    async def task_finished(self, task_id: int, result: dict[str, Any]) -> None:
        return None

    async def node_started(self, task_id: int, node_id: str) -> None:
        return None

    async def node_finished(self, task_id: int, node_id: str, output: dict[str, Any]) -> None:
        return None


def merge_or_source(inputs: dict[str, Any]) -> dict[str, Any]:
    return cases.merge(inputs) if inputs else dict(cases.SOURCE_DATA)


class NaiveDurable(Floor):
    """The floor plus one autocommit write per state change on one aiosqlite connection."""

    name = "naive durable"

    def __init__(self, graph: nx.DiGraph, conn: aiosqlite.Connection, flow: str) -> None:
        super().__init__(graph)
        self.conn = conn
        self.flow = flow

    async def task_started(self) -> int:
        cursor = await self.conn.execute("INSERT INTO task (flow, status, created) VALUES (?, 'running', ?)",
                                         (self.flow, time.time()))
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    async def task_finished(self, task_id: int, result: dict[str, Any]) -> None:
        await self.conn.execute("UPDATE task SET status = 'succeeded', finished = ?, result = ? WHERE id = ?",
                                (time.time(), json.dumps(result), task_id))

    async def node_started(self, task_id: int, node_id: str) -> None:
        await self.conn.execute("INSERT INTO node_run (task_id, node_id, status, started) VALUES (?, ?, 'running', ?)",
                                (task_id, node_id, time.time()))

    async def node_finished(self, task_id: int, node_id: str, output: dict[str, Any]) -> None:
        await self.conn.execute(
            "UPDATE node_run SET status = 'succeeded', finished = ?, output = ? WHERE task_id = ? AND node_id = ?",
            (time.time(), json.dumps(output), task_id, node_id))

    async def queue_task(self) -> int:
        """A queued task row and nothing else (the naive engine's submit)."""
        cursor = await self.conn.execute("INSERT INTO task (flow, status, created) VALUES (?, 'queued', ?)",
                                         (self.flow, time.time()))
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    async def read_task(self, task_id: int) -> tuple[Any, list[Any]]:
        """A poll: the task row and its node rows (the naive engine's GET /task/{id})."""
        async with self.conn.execute("SELECT * FROM task WHERE id = ?", (task_id,)) as cursor:
            row = await cursor.fetchone()
        async with self.conn.execute("SELECT * FROM node_run WHERE task_id = ?", (task_id,)) as cursor:
            nodes = list(await cursor.fetchall())
        return row, nodes


async def open_naive_db(path: Path) -> aiosqlite.Connection:
    """One autocommit connection (every statement commits) in WAL with synchronous=NORMAL."""
    conn = await aiosqlite.connect(path, isolation_level=None)
    await conn.execute("PRAGMA journal_mode=WAL")
    await conn.execute("PRAGMA synchronous=NORMAL")
    for statement in _SCHEMA:
        await conn.execute(statement)
    return conn


def check_result(result: dict[str, Any]) -> None:
    if result != cases.SOURCE_DATA:
        raise AssertionError(f"the graph computed {result!r}, not {cases.SOURCE_DATA!r}")

