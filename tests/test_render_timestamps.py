"""set_timestamp: the same Timestamp whatever zone psycopg hands a datetime out in.

A zone that is UTC all year subtracts the epoch in that very zone (no offsets asked);
any other takes the general path, or a difference across a DST change would be off.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo

import pytest
from google.protobuf import timestamp_pb2

from conveyor.server.render.convert import set_timestamp

INSTANTS = [
    datetime(1969, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
    datetime(1970, 1, 1, tzinfo=UTC),
    datetime(2026, 3, 29, 0, 59, 59, 500_000, tzinfo=UTC),  # Paris goes to summer time at 1:00
    datetime(2026, 3, 29, 1, 0, 0, 1, tzinfo=UTC),
    datetime(2026, 11, 1, 5, 30, tzinfo=UTC),  # New York's second 1:30
    datetime(2026, 12, 7, 21, 35, 21, 461_572, tzinfo=UTC),
    datetime(2200, 6, 30, 12, tzinfo=UTC),
]


@pytest.mark.parametrize(
    "zone",
    [
        UTC,
        ZoneInfo("Etc/UTC"),
        ZoneInfo("UTC"),
        ZoneInfo("Europe/Paris"),
        ZoneInfo("America/New_York"),
        timezone(timedelta(hours=-3, minutes=-30)),
    ],
    ids=str,
)
def test_a_timestamp_is_the_instant_in_any_zone(zone: tzinfo) -> None:
    for instant in INSTANTS:
        field = timestamp_pb2.Timestamp()
        set_timestamp(field, instant.astimezone(zone))
        expected = timestamp_pb2.Timestamp()
        expected.FromDatetime(instant)
        assert field == expected, (zone, instant)
