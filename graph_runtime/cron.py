"""Cron slots of a schedule trigger (SPEC §11): validation, the latest slot at or before a time, the next ones.

Pure functions over croniter (no I/O, no clock: callers pass "now", so a test can be anywhere in
time). croniter because it evaluates both directions (next and previous fire time) on
timezone-aware datetimes, is the most used cron evaluator on the package index (Airflow's, whose
maintainers now release it) and is already pulled in by other tools here.

Only the five standard fields (minute hour day-of-month month day-of-week) and the ``@hourly``
style aliases are accepted: a sixth field means seconds to croniter but the first field to Quartz
(Kestra, Spring), so the same text would fire at different times elsewhere.

Daylight-saving time follows croniter: a wall-clock slot inside a spring-forward gap fires at the
first instant after the gap (02:30 on the night clocks jump 02:00 -> 03:00 fires at 03:00); in a
fall-back overlap a wall-clock time that happens twice fires twice (once per UTC instant). Slots
are compared and stored as UTC instants, so each of those is one slot.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, croniter

_ALIASES = frozenset({"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"})
_SOME_DAY = datetime(2000, 1, 1, tzinfo=UTC)
_TICK = timedelta(seconds=1)  # croniter's resolution: a "now" exactly on a slot counts that slot


def check_expression(expression: str) -> str:
    """``expression`` if it is a valid five-field cron (or an alias); else ValueError saying what is wrong."""
    text = " ".join(expression.split())
    if text in _ALIASES:
        return expression
    if len(text.split(" ")) != 5:
        raise ValueError(f"{expression!r} is not a cron of five fields (minute hour day-of-month month "
                         "day-of-week, e.g. '*/15 * * * *') or one of @hourly, @daily, @weekly, @monthly, @yearly")
    if not croniter.is_valid(text):
        raise ValueError(f"{expression!r} is not a valid cron: each field is *, a number in range, a list (1,5), "
                         "a range (1-5) or a step (*/15); months and weekdays also by name (JAN, MON)")
    try:
        croniter(text, _SOME_DAY).get_next(datetime)
    except CroniterBadDateError:
        raise ValueError(f"{expression!r} never fires (no such date, e.g. February 30)") from None
    return expression


def zone(name: str) -> ZoneInfo:
    """The IANA timezone ``name`` (``Europe/Berlin``, ``UTC``); ValueError if there is none."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{name!r} is not an IANA timezone name (e.g. 'UTC', 'Europe/Berlin', "
                         "'America/New_York')") from None


def latest_slot(expression: str, timezone: str, now: datetime) -> datetime:
    """The latest slot at or before ``now`` (a UTC datetime, whole seconds)."""
    local = now.astimezone(zone(timezone)).replace(microsecond=0) + _TICK
    slot: datetime = croniter(expression, local).get_prev(datetime)
    return slot.astimezone(UTC)


def next_slots(expression: str, timezone: str, after: datetime, count: int = 1) -> list[datetime]:
    """The ``count`` slots strictly after ``after``, in UTC."""
    walk = croniter(expression, after.astimezone(zone(timezone)))
    return [walk.get_next(datetime).astimezone(UTC) for _ in range(count)]
