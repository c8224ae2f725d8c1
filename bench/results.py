"""What a run produces: rows of figures per engine, with the targets they are held to."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bench.cases import Case
from bench.figures import Figure

OURS = "graph-runtime"
FLOOR = "floor"
NAIVE = "naive durable"
PREFECT = "Prefect 3"
ENGINES = (OURS, FLOOR, NAIVE, PREFECT)
REFERENCES = (FLOOR, NAIVE, PREFECT)


@dataclass
class Target:
    """A goal for one row: ``value`` (a ratio or an absolute figure) ≤ or ≥ ``limit``."""

    text: str
    value: float | None
    limit: float
    at_most: bool = True

    @property
    def met(self) -> bool | None:
        if self.value is None:
            return None
        return self.value <= self.limit if self.at_most else self.value >= self.limit

    @property
    def verdict(self) -> str:
        if self.value is None:
            return "not measured"
        if self.met:
            return "met"
        # How far off, as a factor of the limit (time or ratio over it, or throughput under it).
        factor = self.value / self.limit if self.at_most else self.limit / self.value if self.value else float("inf")
        return f"missed by {factor:.2f}×"

    def as_dict(self) -> dict[str, Any]:
        return {"text": self.text, "value": self.value, "limit": self.limit, "at_most": self.at_most,
                "met": self.met, "verdict": self.verdict}


@dataclass
class Row:
    """One line of the table: a case's metric for every engine that ran it."""

    case: Case
    metric: str
    figures: dict[str, Figure] = field(default_factory=dict)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def figure(self, engine: str) -> Figure:
        found = self.figures.get(engine)
        if found is None:
            higher = self.metric.endswith("/s")
            found = self.figures[engine] = Figure(unit=self.metric, higher_is_better=higher)
        return found

    def ratio(self, engine: str) -> float | None:
        """Our median ÷ ``engine``'s median (below 1: less time, or less throughput)."""
        ours, ref = self.figures.get(OURS), self.figures.get(engine)
        if ours is None or ref is None or not ours.median or not ref.median:
            return None
        return ours.median / ref.median

    def as_dict(self) -> dict[str, Any]:
        return {"case": self.case.name, "group": self.case.group, "title": self.case.title, "metric": self.metric,
                "figures": {name: f.as_dict() for name, f in self.figures.items()},
                "ratios": {f"{OURS} / {name}": self.ratio(name) for name in REFERENCES if name in self.figures},
                "targets": [t.as_dict() for t in self.targets], "notes": self.notes, "extra": self.extra}
