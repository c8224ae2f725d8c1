"""Samples and what is reported of them: median with min–max, percentiles, ratios."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Figure:
    """One measured quantity of one engine in one case: every run's value, in ``unit``.

    ``higher_is_better`` says which way a ratio to a reference reads (throughput vs time).
    """

    unit: str
    samples: list[float] = field(default_factory=list)
    higher_is_better: bool = False
    note: str | None = None

    def add(self, value: float) -> None:
        self.samples.append(value)

    @property
    def median(self) -> float | None:
        return statistics.median(self.samples) if self.samples else None

    @property
    def low(self) -> float | None:
        return min(self.samples) if self.samples else None

    @property
    def high(self) -> float | None:
        return max(self.samples) if self.samples else None

    def as_dict(self) -> dict[str, Any]:
        return {"unit": self.unit, "median": self.median, "min": self.low, "max": self.high,
                "runs": len(self.samples), "samples": self.samples, "higher_is_better": self.higher_is_better,
                "note": self.note}


def ratio(ours: Figure | None, reference: Figure | None) -> float | None:
    """``ours / reference`` of the medians (for a throughput as for a time: read with the unit)."""
    if ours is None or reference is None or not ours.median or not reference.median:
        return None
    return ours.median / reference.median


def percentile(samples: Sequence[float], p: float) -> float:
    """The ``p``-th percentile by linear interpolation between closest ranks (numpy's default)."""
    ordered = sorted(samples)
    if not ordered:
        raise ValueError("no samples")
    rank = p / 100 * (len(ordered) - 1)
    below = int(rank)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (rank - below)
