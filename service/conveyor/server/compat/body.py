"""Reading a seed's JSON body and query string, and writing proto times the seeds' way.

An adapter checks only what it needs to build the v1 request: that a field has the
JSON type the seed documents, or a value the seed's vocabulary names. Every limit
(lengths, bounds, grammars) is v1's, checked once by the v1 call; this module never
repeats one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from google.protobuf import duration_pb2, struct_pb2, timestamp_pb2
from google.protobuf.json_format import ParseDict
from google.protobuf.message import Message
from starlette.requests import Request

from conveyor.server.compat.routing import BadSeedInput
from conveyor.server.errors import Violations

__all__ = [
    "Fields",
    "check",
    "comma_list",
    "duration_of",
    "page_of",
    "query_of",
    "rfc3339",
    "seconds_of",
    "timestamp_of",
    "value_of",
]

_NO_VALUE = object()


def check(v: Violations) -> None:
    """Refuses the request (400, every field at once) when `v` holds violations."""
    if v.items:
        raise BadSeedInput(*v.items)


class Fields:
    """Typed reads of one JSON object, collecting every wrong type in `violations`."""

    def __init__(self, data: Any, violations: Violations | None = None) -> None:
        self.violations = violations or Violations()
        if not isinstance(data, Mapping):
            self.violations.add("body", "must be a JSON object")
            data = {}
        self.data: Mapping[str, Any] = data

    def check(self) -> None:
        check(self.violations)

    def has(self, key: str) -> bool:
        return key in self.data and self.data[key] is not None

    def _get(self, key: str, required: bool) -> Any:
        value = self.data.get(key)
        if value is None:
            if required:
                self.violations.add(key, "is required")
            return _NO_VALUE
        return value

    def text(self, key: str, *, required: bool = False) -> str:
        value = self._get(key, required)
        if value is _NO_VALUE:
            return ""
        if not isinstance(value, str):
            self.violations.add(key, "must be a string")
            return ""
        if required and not value:
            self.violations.add(key, "is required")
        return str(value)

    def integer(self, key: str, *, required: bool = False) -> int | None:
        value = self._get(key, required)
        if value is _NO_VALUE:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.violations.add(key, "must be an integer")
            return None
        if isinstance(value, float) and not value.is_integer():
            self.violations.add(key, "must be an integer")
            return None
        number = int(value)
        if not -(2**31) <= number < 2**31:
            self.violations.add(key, "is out of range")
            return None
        return number

    def flag(self, key: str) -> bool | None:
        value = self._get(key, False)
        if value is _NO_VALUE:
            return None
        if not isinstance(value, bool):
            self.violations.add(key, "must be true or false")
            return None
        return value

    def obj(self, key: str, *, required: bool = False) -> dict[str, Any] | None:
        value = self._get(key, required)
        if value is _NO_VALUE:
            return None
        if not isinstance(value, dict):
            self.violations.add(key, "must be a JSON object")
            return None
        return value

    def strings(self, key: str) -> list[str]:
        value = self._get(key, False)
        if value is _NO_VALUE:
            return []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.violations.add(key, "must be a list of strings")
            return []
        return list(value)

    def any(self, key: str) -> Any:
        """Any JSON value, or None when absent or null."""
        value = self._get(key, False)
        return None if value is _NO_VALUE else value

    def timestamp(self, key: str) -> timestamp_pb2.Timestamp | None:
        text = self.text(key)
        return timestamp_of(self.violations, key, text) if text else None


def query_of(request: Request) -> dict[str, list[str]]:
    """The query string as {name: [values]}, repeats in order."""
    found: dict[str, list[str]] = {}
    for key, value in request.query_params.multi_items():
        found.setdefault(key, []).append(value)
    return found


def page_of(v: Violations, q: Mapping[str, list[str]]) -> tuple[str, int]:
    """`cursor` and `limit` as v1's page_token and page_size. A limit must be a whole
    number from 1 (v1 reads 0 as its default); its upper bound is v1's page_size rule."""
    token = (q.get("cursor") or [""])[-1]
    limit = (q.get("limit") or [""])[-1]
    if not limit:
        return token, 0
    if not limit.isdigit() or int(limit) == 0:
        v.add("limit", "must be between 1 and 5000")
        return token, 0
    return token, min(int(limit), 2**31 - 1)


def comma_list(values: list[str]) -> list[str]:
    """`critical,high` and `a&a` query repeats alike: every non-empty item, trimmed."""
    return [item.strip() for value in values for item in value.split(",") if item.strip()]


def timestamp_of(v: Violations, key: str, text: str) -> timestamp_pb2.Timestamp | None:
    stamp = timestamp_pb2.Timestamp()
    try:
        stamp.FromJsonString(text)
    except ValueError:
        v.add(key, f"{text!r} is not an RFC 3339 time, e.g. 2026-04-16T00:00:00Z")
        return None
    return stamp


def seconds_of(seconds: int) -> duration_pb2.Duration:
    return duration_pb2.Duration(seconds=seconds)


def duration_of(message: Message, field: str) -> int | None:
    """Whole seconds of a Duration field, or None when unset."""
    if not message.HasField(field):
        return None
    value: duration_pb2.Duration = getattr(message, field)
    return int(value.seconds)


def value_of(data: Any) -> struct_pb2.Value:
    """Any JSON value as a google.protobuf.Value."""
    value = struct_pb2.Value()
    ParseDict(data, value)
    return value


def rfc3339(message: Message, field: str) -> str | None:
    """A Timestamp field as RFC 3339 (`2026-04-16T09:00:00.123Z`), or None when unset."""
    if not message.HasField(field):
        return None
    stamp: timestamp_pb2.Timestamp = getattr(message, field)
    return stamp.ToJsonString()
