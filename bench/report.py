"""The outputs of a run: a table on stdout, ``results.json``, ``results.md`` and ``results.png``."""

from __future__ import annotations

import json
import os
import platform
import sys
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.cases import Sizes
from bench.figures import Figure
from bench.results import ENGINES, FLOOR, NAIVE, OURS, PREFECT, REFERENCES, Row

RATIO_HEADERS = {FLOOR: "÷ floor", NAIVE: "÷ naive", PREFECT: "÷ Prefect"}


def number(value: float | None) -> str:
    if value is None:
        return "—"
    size = abs(value)
    if size >= 1000:
        return f"{value:,.0f}"
    if size >= 100:
        return f"{value:.0f}"
    if size >= 10:
        return f"{value:.1f}"
    if size >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def cell(figure: Figure | None) -> str:
    if figure is None or not figure.samples:
        return "—"
    text = f"{number(figure.median)} ({number(figure.low)}–{number(figure.high)})"
    return text + "*" if figure.note else text


def ratio_cell(value: float | None) -> str:
    return "—" if value is None else f"{number(value)}×"


def target_cell(row: Row) -> str:
    return "; ".join(f"{t.text}: {number(t.value)} → {t.verdict}" for t in row.targets)


def columns() -> list[str]:
    return ["case", "metric", *ENGINES, *RATIO_HEADERS.values(), "target"]


def cells(row: Row) -> list[str]:
    return [row.case.name, row.metric, *(cell(row.figures.get(e)) for e in ENGINES),
            *(ratio_cell(row.ratio(e)) for e in REFERENCES), target_cell(row)]


def print_table(rows: list[Row], skipped: dict[str, str]) -> None:
    table = Table(title="graph-runtime benchmark: median (min–max) of the runs; ratios are ours ÷ reference",
                  show_lines=False)
    for name in columns():
        table.add_column(name, overflow="fold")
    for row in rows:
        table.add_row(*cells(row))
    width = None if sys.stdout.isatty() else 240
    console = Console(width=width)
    console.print(table)
    for line in footnotes(rows, skipped):
        console.print(line, markup=False, highlight=False)


def footnotes(rows: list[Row], skipped: dict[str, str]) -> list[str]:
    lines = [f"{engine}: {why}" for engine, why in skipped.items()]
    for row in rows:
        for engine, figure in row.figures.items():
            if figure.note:
                lines.append(f"* {row.case.name} {engine}: {figure.note}")
        lines.extend(f"{row.case.name}: {note}" for note in row.notes)
    return lines


def markdown(rows: list[Row], skipped: dict[str, str], meta: dict[str, Any]) -> str:
    head = columns()
    lines = [f"Run {meta['date']} on {meta['machine']} ({meta['cpus']} CPUs), Python {meta['python']}, "
             f"product source {meta['source_digest']}, {meta['seconds']:.0f} s.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in cells(row)) + " |" for row in rows]
    notes = footnotes(rows, skipped)
    if notes:
        lines += ["", *(f"- {n}" for n in notes)]
    return "\n".join(lines) + "\n"


def metadata() -> dict[str, Any]:
    return {"date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": platform.machine(),
            "platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()}


def write(rows: list[Row], skipped: dict[str, str], sizes: Sizes, out: Path, seconds: float,
          source_digest: str) -> dict[str, Path]:
    """Write the JSON, Markdown and PNG files; returns what was written (the PNG needs matplotlib)."""
    out.mkdir(parents=True, exist_ok=True)
    meta = {**metadata(), "seconds": round(seconds, 1), "source_digest": source_digest}
    written = {"json": out / "results.json", "md": out / "results.md"}
    chart = out / "results.png"
    if write_chart(rows, chart):
        written["png"] = chart
    else:
        skipped["chart"] = "matplotlib is not installed: no PNG (pip install -e '.[bench]')"
    document = {"meta": meta, "sizes": asdict(sizes), "skipped": skipped, "rows": [r.as_dict() for r in rows]}
    written["json"].write_text(json.dumps(document, indent=2, ensure_ascii=False), encoding="utf-8")
    written["md"].write_text(markdown(rows, skipped, meta), encoding="utf-8")
    return written


def write_chart(rows: list[Row], path: Path) -> bool:
    """Per-node cost against graph size, and latency percentiles over HTTP. False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (growth, latency) = plt.subplots(1, 2, figsize=(13, 5))
    _plot_growth(growth, [r for r in rows if r.case.group == "growth"])
    _plot_latency(latency, next((r for r in rows if r.case.name == "http-latency" and "percentiles_ms" in r.extra), None))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _plot_growth(ax: Any, rows: list[Row]) -> None:
    ax.set_title("Per-node cost against graph size (median, min–max)")
    ax.set_xlabel("nodes in the graph")
    ax.set_ylabel("µs per node")
    styles = {"deep": "-", "wide": "--"}
    colours = {OURS: "tab:blue", FLOOR: "tab:gray", NAIVE: "tab:orange", PREFECT: "tab:green"}
    plotted = False
    for kind, style in styles.items():
        for engine in ENGINES:
            points = sorted((r.extra["nodes"], r.figures[engine]) for r in rows
                            if r.extra.get("kind") == kind and engine in r.figures and r.figures[engine].samples)
            if not points:
                continue
            xs = [n for n, _ in points]
            ys = [f.median for _, f in points]
            errors = [[f.median - f.low for _, f in points], [f.high - f.median for _, f in points]]
            ax.errorbar(xs, ys, yerr=errors, linestyle=style, marker="o", capsize=3, color=colours[engine],
                        label=f"{engine}, {kind}")
            plotted = True
    if plotted:
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.legend(fontsize=8)
    else:
        ax.axis("off")
        ax.text(0.5, 0.5, "growth cases not run", ha="center", transform=ax.transAxes)


def _plot_latency(ax: Any, row: Row | None) -> None:
    ax.set_title("HTTP submit→succeeded latency, concurrency 1")
    if row is None:
        ax.axis("off")
        ax.text(0.5, 0.5, "HTTP cases not run", ha="center", transform=ax.transAxes)
        return
    percentiles = row.extra["percentiles_ms"]
    labels = [("max" if p == "100" else f"p{p}") for p in percentiles]
    ax.bar(labels, list(percentiles.values()), color="tab:blue", label=f"{OURS} over HTTP (all runs pooled)")
    for engine, colour in ((NAIVE, "tab:orange"), (FLOOR, "tab:gray")):
        figure = row.figures.get(engine)
        if figure is not None and figure.median:
            ax.axhline(figure.median, color=colour, linestyle="--", label=f"{engine} in-process, per flow (median)")
    ax.set_ylabel("ms")
    ax.legend(fontsize=8)
