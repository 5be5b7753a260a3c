"""Small conversions between proto well-known types and Python values."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo

from google.protobuf import duration_pb2, timestamp_pb2

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    """A Timestamp, or None so that `Message(field=None)` leaves the field unset."""
    if value is None:
        return None
    if value.tzinfo is None:
        ts = timestamp_pb2.Timestamp()
        ts.FromDatetime(value.astimezone(UTC))
        return ts
    # Aware datetimes (all of psycopg's timestamptz) by arithmetic: a few times faster
    # than FromDatetime, and every task message carries several.
    delta = value - _EPOCH
    return timestamp_pb2.Timestamp(
        seconds=delta.days * 86_400 + delta.seconds, nanos=delta.microseconds * 1000
    )


_UTC_KEYS = frozenset(
    {"UTC", "Etc/UTC", "Etc/UCT", "UCT", "Etc/Universal", "Universal", "Etc/Zulu", "Zulu"}
)
_EPOCHS: dict[tzinfo, datetime] = {UTC: _EPOCH}
"""The epoch in each zone known to be UTC all year, keyed by the zone object itself."""


def _epoch(zone: tzinfo) -> datetime | None:
    """The epoch in `zone` when the zone is UTC at every instant (else None).

    Two datetimes with the same tzinfo object subtract without asking it for offsets;
    a difference across zones asks both, and psycopg hands out its connection's
    TimeZone as a ZoneInfo ('Etc/UTC' on a stock server), whose utcoffset was about
    half of what setting a timestamp cost. Only zones without offset changes may take
    that path, or a difference across a change would be off by it."""
    epoch = _EPOCHS.get(zone)
    if epoch is None and isinstance(zone, ZoneInfo) and zone.key in _UTC_KEYS:
        epoch = _EPOCHS[zone] = _EPOCH.astimezone(zone)
    return epoch


def set_timestamp(field: timestamp_pb2.Timestamp, value: datetime) -> None:
    """Sets a Timestamp field in place (no message built and copied), by arithmetic."""
    zone = value.tzinfo
    if zone is None:
        value = value.astimezone(UTC)
        zone = UTC
    delta = value - (_EPOCHS.get(zone) or _epoch(zone) or _EPOCH)
    field.seconds = delta.days * 86_400 + delta.seconds
    field.nanos = delta.microseconds * 1000


def duration(value: timedelta | None) -> duration_pb2.Duration | None:
    if value is None:
        return None
    if value >= timedelta(0):
        return duration_pb2.Duration(
            seconds=value.days * 86_400 + value.seconds, nanos=value.microseconds * 1000
        )
    d = duration_pb2.Duration()
    d.FromTimedelta(value)
    return d


def to_timedelta(message: duration_pb2.Duration) -> timedelta:
    return message.ToTimedelta()


def to_datetime(message: timestamp_pb2.Timestamp) -> datetime:
    return message.ToDatetime(tzinfo=UTC)
