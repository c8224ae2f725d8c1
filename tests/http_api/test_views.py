"""The wire form of timestamps: ISO 8601, UTC, always six fraction digits, ``Z``."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from http_api.views import timestamp, timestamp_text
from nodes import codec

_WIRE = re.compile(r'"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z"')


def wire(value: datetime) -> str:
    return codec.dumps(timestamp(value)).decode()


def test_a_whole_second_still_has_six_fraction_digits() -> None:
    assert wire(datetime(2026, 11, 23, 21, 14, 34, tzinfo=UTC)) == '"2026-11-23T21:14:34.000000Z"'


def test_another_zone_is_written_in_utc() -> None:
    paris = timezone(timedelta(hours=1))
    assert wire(datetime(2026, 11, 23, 22, 14, 34, 800001, tzinfo=paris)) == '"2026-11-23T21:14:34.800001Z"'


@given(st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)))
def test_every_utc_instant_round_trips_in_the_one_wire_form(value: datetime) -> None:
    text = wire(value)
    assert _WIRE.fullmatch(text), text
    assert datetime.fromisoformat(text.strip('"').replace("Z", "+00:00")) == value


def test_none_is_null() -> None:
    assert codec.dumps({"finished": timestamp(None)}) == b'{"finished":null}'


def test_text_for_the_terminal_is_the_same_as_on_the_wire() -> None:
    for value in (datetime(2026, 11, 23, 21, 14, 34, tzinfo=UTC), datetime(2026, 11, 23, 21, 14, 34, 5, tzinfo=UTC)):
        assert f'"{timestamp_text(value)}"' == wire(value)
