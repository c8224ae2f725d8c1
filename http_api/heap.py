"""Garbage-collector settings for a long-running graph-runtime process (``serve``, ``run``)."""

from __future__ import annotations

import gc

FULL_COLLECTION_EVERY = 100
"""Young-generation collections between two full ones (CPython's default is 10)."""


def settle() -> None:
    """Call once, when the process has started (modules imported, services open); never per request.

    * ``gc.freeze()``: what exists now (modules, the registry, the engine: ~110,000 objects) lives
      as long as the process, so full collections need not scan it again.
    * Full collections ten times rarer. All of a task's running nodes are alive at once, and with
      the default every full collection scanned all of them again: per-node cost grew with the
      graph (10,000 parallel nodes spent 60% of their time in full collections; the benchmark's
      growth case). Young collections are unchanged: short-lived garbage goes as fast as before.
    """
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_COLLECTION_EVERY)
