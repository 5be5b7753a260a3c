"""Small conversions between proto well-known types and Python values."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

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


def set_timestamp(field: timestamp_pb2.Timestamp, value: datetime) -> None:
    """Sets a Timestamp field in place (no message built and copied), by arithmetic."""
    if value.tzinfo is None:
        value = value.astimezone(UTC)
    delta = value - _EPOCH
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
