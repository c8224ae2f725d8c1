"""The benchmark suite: our engine against its references, in one run on one machine.

``python -m bench`` runs every case and prints a table; it also writes ``results.json``,
``results.md`` and ``results.png`` to ``--out`` (default ``bench/results/``). Every figure is the
median of several runs with their min–max, and is reported as a ratio to references measured in
the same run:

- ``floor``: plain asyncio + networkx executing the same graph, one asyncio task per node;
- ``naive durable``: the same plus one aiosqlite autocommit write per state change (task start
  and end, node start and end; WAL, synchronous=NORMAL) — what a naive durable engine costs;
- ``Prefect 3``: in-process flows and tasks against Prefect's ephemeral API server on
  127.0.0.1 (telemetry off), when the ``bench`` extra is installed.

Modules: ``cases`` (graph shapes and the case list), ``figures`` (samples and their summary),
``references`` (floor and naive durable), ``prefect_ref`` (Prefect, run in its own process),
``inprocess`` (our executor on a real SQLite file), ``http`` (server process and load generator),
``rss`` (peak memory, each measure in a fresh process), ``report`` (table, JSON, Markdown, PNG),
``suite`` (runs the cases in order with progress on stderr).
"""
