"""The rate grammar of queue rate limits: `<count>[/s|/m|/h]`, e.g. `100/m`.

A bare count is per second. `0` and the empty string mean no limit and are stored
as the empty string. Values are normalised (`100 / M` -> `100/m`) so equal limits
compare equal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from conveyor.server.errors import InvalidArgument

__all__ = ["MAX_COUNT", "Rate", "normalise", "parse"]

MAX_COUNT = 1_000_000
_RATE = re.compile(r"\s*(\d{1,9})\s*(?:/\s*([smhSMH]))?\s*")
_SECONDS = {"s": 1, "m": 60, "h": 3600}
RULE = "must be a count with an optional /s, /m or /h (e.g. 100/m), or 0 for no limit"


@dataclass(frozen=True)
class Rate:
    count: int
    unit: str  # s, m or h

    @property
    def per_second(self) -> float:
        return self.count / _SECONDS[self.unit]

    def __str__(self) -> str:
        return f"{self.count}/{self.unit}"


def parse(value: str, field_path: str) -> Rate | None:
    """The rate of `value`, None for no limit; InvalidArgument naming field_path otherwise."""
    if value.strip() == "":
        return None
    match = _RATE.fullmatch(value)
    if match is None:
        raise InvalidArgument.of(field_path, RULE)
    count = int(match.group(1))
    if count == 0:
        return None
    if count > MAX_COUNT:
        raise InvalidArgument.of(field_path, f"the count must be at most {MAX_COUNT}")
    return Rate(count, (match.group(2) or "s").lower())


def normalise(value: str, field_path: str) -> str:
    """The stored form of a rate limit: `<count>/<unit>`, or "" for no limit."""
    rate = parse(value, field_path)
    return "" if rate is None else str(rate)
