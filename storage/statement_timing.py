"""Timing every SQL statement an engine runs, for the metrics of the layer above (no SQLAlchemy type leaves).

SQLAlchemy's cursor events bracket each statement on the connection that runs it; the start
time rides on the execution context, so concurrent statements on other connections never mix.
Not seen: the hot path of either engine (:mod:`storage.hot_path`: stdlib ``sqlite3``, or asyncpg
directly), which would need a timing call of its own; these are the API side's queries.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

Observer = Callable[[str, float], None]  # (statement text, seconds)
_STARTED = "_graph_runtime_started"


def time_statements(engine: AsyncEngine, observe: Observer) -> Callable[[], None]:
    """Call ``observe(statement, seconds)`` after each statement ``engine`` runs; returns the undo."""
    sync = engine.sync_engine

    def before(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        if context is not None:
            setattr(context, _STARTED, time.perf_counter())

    def after(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        started = getattr(context, _STARTED, None)
        if started is not None:
            observe(statement, time.perf_counter() - started)

    event.listen(sync, "before_cursor_execute", before)
    event.listen(sync, "after_cursor_execute", after)

    def undo() -> None:
        event.remove(sync, "before_cursor_execute", before)
        event.remove(sync, "after_cursor_execute", after)

    return undo
