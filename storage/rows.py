"""The row codec of both hot paths: ``task`` and ``node_run`` rows to and from :class:`Task` and
:class:`NodeRun`, by position, in the column orders below.

Both drivers hand JSON columns over as text (the hot paths encode and decode it with the project's
codec, off the loop when large); they differ only in datetimes: SQLite stores SQLAlchemy's
``YYYY-MM-DD HH:MM:SS.ffffff`` UTC text, asyncpg speaks aware datetimes. So a :class:`RowCodec` is
that one difference, and everything else is shared. The SQLAlchemy queries of the API side decode
JSON and datetimes themselves and go through :data:`DECODED`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from graph_runtime.events import EventBatch, EventKind, TaskEvent
from graph_runtime.models import Lease, NodeRun, NodeStatus, RunError, Task, TaskRequest, TaskStatus
from nodes import codec
from storage import event_data

TASK_COLUMNS = (
    "id", "flow_id", "revision", "status", "data", "created", "started", "finished", "result", "execution_time",
    "execution_cost", "error", "claims", "request_fingerprint", "interruptions", "lease_owner", "parent_id",
)
RUN_COLUMNS = (
    "task_id", "node_id", "status", "started", "finished", "execution_time", "cost", "attempts", "error", "output",
    "cached", "saved_cost", "items", "waiting_for_pool",
)
# A stored batch of one task's events (``task_event_batch``): its first and last numbers, whether
# the last is the task's final event, and the events as one JSON array of [seq, kind, data]
# (a task's or node run's data as an array by position: ``storage.event_data``). Batches written
# before events lost their unread time hold [seq, kind, at, data], and read back the same.
EVENT_COLUMNS = ("task_id", "seq", "last_seq", "final", "events")
FINGERPRINT = TASK_COLUMNS.index("request_fingerprint")
CLAIMS = TASK_COLUMNS.index("claims")
ERROR, OUTPUT = RUN_COLUMNS.index("error"), RUN_COLUMNS.index("output")

# Lookups, not Enum calls: a poll converts a status per node.
_TASK_STATUS = {status.value: status for status in TaskStatus}
_NODE_STATUS = {status.value: status for status in NodeStatus}
_EVENT_KIND = {kind.value: kind for kind in EventKind}


def dt_text(value: datetime | None) -> str | None:
    """SQLAlchemy's SQLite DATETIME text for an aware datetime (the UTC wall time)."""
    if value is None:
        return None
    if value.tzinfo is not UTC:
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pass an aware UTC datetime")
        value = value.astimezone(UTC)
    return value.isoformat(" ", "microseconds")[:-6]  # without "+00:00"


def parse_dt_text(text: str | None) -> datetime | None:
    # Parsing the zone is ~6x faster than .replace(tzinfo=UTC) afterwards (a poll parses dozens).
    return None if text is None else datetime.fromisoformat(text + "+00:00")


def aware(value: datetime | None) -> datetime | None:
    """An aware datetime as it is (asyncpg's timestamptz both ways); a naive one is refused."""
    if value is not None and value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}: pass an aware UTC datetime")
    return value


def utc(value: datetime | None) -> datetime | None:
    """A datetime read back, in UTC."""
    return value if value is None or value.tzinfo is UTC else value.astimezone(UTC)


def json_text(value: Any) -> str | None:
    """JSON text, or NULL for None (the tables' JSON columns are ``none_as_null``)."""
    return None if value is None else codec.dumps_str(value)


def _json(text: str | None) -> Any:
    return None if text is None else codec.loads(text)


def _same(value: Any) -> Any:
    return value


@dataclass(frozen=True)
class RowCodec:
    """What one driver needs: how a datetime is written and read, and how JSON is read."""

    encode_dt: Callable[[datetime | None], Any]
    decode_dt: Callable[[Any], datetime | None]
    decode_json: Callable[[Any], Any] = _json

    def task(self, row: Sequence[Any], nodes: dict[str, NodeRun]) -> Task:
        """A :class:`Task` from a row of :data:`TASK_COLUMNS` and its node runs."""
        status = _TASK_STATUS[row[3]]
        lease = Lease(row[15], row[12]) if row[15] is not None and status is TaskStatus.RUNNING else None
        dt, js = self.decode_dt, self.decode_json
        return Task(
            id=row[0], flow_id=row[1], revision=row[2], request=TaskRequest.from_data(js(row[4])), status=status,
            created=dt(row[5]), started=dt(row[6]), finished=dt(row[7]), result=js(row[8]), execution_time=row[9],
            execution_cost=row[10], error=RunError.from_dict(js(row[11])), nodes=nodes, claims=row[12],
            interruptions=row[14], lease=lease, parent_id=row[16],
        )

    def events(self, row: Sequence[Any], after: int) -> list[TaskEvent]:
        """The events of a row of :data:`EVENT_COLUMNS` numbered after ``after``."""
        task_id, last, final = row[0], row[2], bool(row[3])
        kinds = _EVENT_KIND
        # The data as stored (``storage.event_data``): whoever shows an event decodes it.
        entries = self.decode_json(row[4])
        if final:  # its final event may point at the row's node events (event_data.with_references)
            entries = event_data.resolved(entries)
        return [TaskEvent(task_id, entry[0], kinds[entry[1]], entry[-1], final and entry[0] == last)
                for entry in entries if entry[0] > after]

    def node_run(self, row: Sequence[Any]) -> NodeRun:
        """A :class:`NodeRun` from a row of :data:`RUN_COLUMNS`."""
        dt, js = self.decode_dt, self.decode_json
        return NodeRun(
            node_id=row[1], status=_NODE_STATUS[row[2]], started=dt(row[3]), finished=dt(row[4]),
            execution_time=row[5], cost=row[6], attempts=row[7], error=RunError.from_dict(js(row[8])),
            output=js(row[9]), cached=bool(row[10]), saved_cost=row[11], items=js(row[12]), waiting_for_pool=row[13],
        )

    def runs_by_task(self, rows: Iterable[Sequence[Any]]) -> dict[int, dict[str, NodeRun]]:
        """Node-run rows (ordered by task) grouped by task id, in the rows' order."""
        grouped: dict[int, dict[str, NodeRun]] = {}
        for row in rows:
            grouped.setdefault(row[0], {})[row[1]] = self.node_run(row)
        return grouped

    def run_params(self, task_id: int, run: NodeRun) -> tuple[Any, ...]:
        """One node run's values in :data:`RUN_COLUMNS` order, JSON as text."""
        dt = self.encode_dt
        return (
            task_id, run.node_id, NodeStatus(run.status).value, dt(run.started), dt(run.finished), run.execution_time,
            run.cost, run.attempts, json_text(run.error.as_dict() if run.error else None), json_text(run.output),
            bool(run.cached), run.saved_cost, json_text(run.items), run.waiting_for_pool,
        )


SQLITE = RowCodec(dt_text, parse_dt_text)
POSTGRES = RowCodec(aware, utc)
DECODED = RowCodec(_same, _same, _same)
"""Rows whose driver decoded JSON and datetimes already (SQLAlchemy's, on the API side)."""


def params_size(params: Iterable[Sequence[Any]]) -> int:
    """Roughly how many bytes these ``run_params`` rows write (their JSON: output and error)."""
    return sum(len(row[OUTPUT] or "") + len(row[ERROR] or "") for row in params)


def last_per_run(params: Sequence[tuple[Any, ...]]) -> Sequence[tuple[Any, ...]]:
    """The rows of a batch with one row per (task, node), the last given: one statement may not
    upsert a row twice on PostgreSQL, and the last one is what a sequence of upserts leaves."""
    if len({(row[0], row[1]) for row in params}) == len(params):
        return params
    return list({(row[0], row[1]): row for row in params}.values())


EVENTS_CONFLICT = (
    " ON CONFLICT (task_id, seq) DO UPDATE SET last_seq = excluded.last_seq, final = excluded.final,"
    " events = excluded.events WHERE excluded.last_seq > task_event_batch.last_seq"
)
"""Both engines' rule for a batch starting at a number already written: it replaces that row only
when it goes further (a commit retried after an unclear failure on PostgreSQL carries the same
events and newer ones); otherwise what was written stays (SPEC §10, §11)."""

EVENT_EPOCH = 5
"""Where an :func:`event_params` row holds its fence: the claim count its writer held."""
EVENTS_JSON = EVENT_COLUMNS.index("events")


def event_params(batches: Sequence[EventBatch]) -> list[tuple[Any, ...]]:
    """``graph_runtime.events.EventBatch``es as ``task_event_batch`` rows: one per unbroken run of a
    task's numbers under one writer's epoch, its entries one JSON array (one encoding and one row
    for a task's twenty-odd events, not twenty), then the fence, the epoch (None: not fenced). The
    entries are written as they are: their data was encoded when they happened
    (:mod:`storage.event_data`).

    Only unbroken runs: an event numbered in between but stored in another commit (a node's late
    report) gets a row of its own, and no row's range holds a number it lacks, so a read from any
    number finds every event after it."""
    dumps = codec.dumps_str
    # Per task and epoch, its runs: [first, last, final, entries] (a batch's entries are never
    # changed in place: a commit that fails is retried with the same batches).
    joined: dict[tuple[int, int | None], list[list[Any]]] = {}
    for batch in batches:
        entries = batch.entries
        runs = joined.setdefault((batch.task_id, batch.epoch), [])
        if runs and runs[-1][1] + 1 == entries[0][0]:
            run = runs[-1]
            run[1:] = entries[-1][0], batch.final, run[3] + entries
        else:
            runs.append([entries[0][0], entries[-1][0], batch.final, entries])
    return [(task_id, first, last, final, dumps(event_data.with_references(entries) if final else entries), epoch)
            for (task_id, epoch), runs in joined.items() for first, last, final, entries in runs]
