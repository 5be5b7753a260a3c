"""RetryPolicy: validation, and the layering task fields > queue default > built-in default.

A policy is stored sparsely: a task's unset fields are NULL until the insert fills
them from its queue's `default_retry_policy` (JSON with only the fields that were
set) and then from DEFAULTS. The merge runs in the insert statement so that it
reads the queue's policy as of the insert.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from google.protobuf import duration_pb2

from conveyor.server.errors import Violations
from conveyor.v1 import enums_pb2, task_pb2

__all__ = ["DEFAULTS", "Policy", "delay_ms", "exponential_step", "message", "parse"]

MAX_ATTEMPTS = 1000
MAX_INITIAL_BACKOFF_MS = 24 * 3600 * 1000
MAX_MAX_BACKOFF_MS = 7 * 24 * 3600 * 1000

BACKOFFS: dict[int, str] = {
    enums_pb2.BACKOFF_EXPONENTIAL_JITTER: "EXPONENTIAL_JITTER",
    enums_pb2.BACKOFF_LINEAR: "LINEAR",
    enums_pb2.BACKOFF_FIXED: "FIXED",
}


def exponential_step(attempt: int, initial: int | float, maximum: int | float) -> int | float:
    """The cap of the delay after `attempt` (1 for the first): `initial`, doubling with
    each attempt after the first, never above `maximum`. The one backoff curve of the
    server: task retries (delay_ms) and webhook deliveries jitter under it."""
    return min(maximum, initial * (1 << min(max(attempt, 1) - 1, 62)))


def delay_ms(backoff: str, attempt: int, initial_ms: int, max_ms: int, rand: float) -> int:
    """Milliseconds before a task is retried after `attempt`, for a draw `rand` in [0, 1).

    The SQL function conveyor_backoff_ms (store/schema.sql) is the copy the reaper and
    the report statement run; tests/test_backoff.py holds the two equal on a grid.
    FIXED waits `initial`, LINEAR `initial * attempt`, EXPONENTIAL_JITTER is "full
    jitter": uniform over [0, exponential_step]; all capped at `max_ms`.
    """
    if backoff == "FIXED":
        return min(initial_ms, max_ms)
    if backoff == "LINEAR":
        return min(initial_ms * max(attempt, 1), max_ms)
    return math.floor(rand * float(exponential_step(attempt, initial_ms, max_ms) + 1))


@dataclass(frozen=True, slots=True)
class Policy:
    """A retry policy whose None fields are unset (inherited)."""

    max_attempts: int | None = None
    backoff: str | None = None
    initial_backoff_ms: int | None = None
    max_backoff_ms: int | None = None

    def to_json(self) -> dict[str, Any]:
        """The sparse JSON stored as a queue's default_retry_policy."""
        fields = {
            "max_attempts": self.max_attempts,
            "backoff": self.backoff,
            "initial_backoff_ms": self.initial_backoff_ms,
            "max_backoff_ms": self.max_backoff_ms,
        }
        return {k: v for k, v in fields.items() if v is not None}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Policy:
        return cls(
            max_attempts=data.get("max_attempts"),
            backoff=data.get("backoff"),
            initial_backoff_ms=data.get("initial_backoff_ms"),
            max_backoff_ms=data.get("max_backoff_ms"),
        )


DEFAULTS = Policy(
    max_attempts=3,
    backoff="EXPONENTIAL_JITTER",
    initial_backoff_ms=1000,
    max_backoff_ms=3600 * 1000,
)


def duration_ms(
    v: Violations, value: duration_pb2.Duration, field_path: str, *, low_ms: int, high_ms: int
) -> int | None:
    """Milliseconds of a google.protobuf.Duration within [low_ms, high_ms], else a violation."""
    seconds, nanos = value.seconds, value.nanos
    if (seconds < 0 or nanos < 0) or abs(nanos) >= 1_000_000_000:
        v.add(field_path, "must be a non-negative duration")
        return None
    ms = seconds * 1000 + nanos // 1_000_000
    if not low_ms <= ms <= high_ms:
        v.add(field_path, f"must be between {_human(low_ms)} and {_human(high_ms)}")
        return None
    return ms


def _human(ms: int) -> str:
    if ms % 86_400_000 == 0 and ms:
        return f"{ms // 86_400_000}d"
    if ms % 3_600_000 == 0 and ms:
        return f"{ms // 3_600_000}h"
    if ms % 1000 == 0:
        return f"{ms // 1000}s"
    return f"{ms}ms"


def parse(v: Violations, policy: task_pb2.RetryPolicy, field_path: str) -> Policy:
    """The set fields of a RetryPolicy message; every bad field is added to `v`."""
    max_attempts: int | None = None
    if policy.max_attempts < 0 or policy.max_attempts > MAX_ATTEMPTS:
        v.add(f"{field_path}.max_attempts", f"must be between 1 and {MAX_ATTEMPTS} (0: default)")
    elif policy.max_attempts:
        max_attempts = policy.max_attempts
    backoff: str | None = None
    if policy.backoff:
        backoff = BACKOFFS.get(policy.backoff)
        if backoff is None:
            v.add(f"{field_path}.backoff", "must be EXPONENTIAL_JITTER, LINEAR or FIXED")
    initial = maximum = None
    if policy.HasField("initial_backoff"):
        initial = duration_ms(
            v,
            policy.initial_backoff,
            f"{field_path}.initial_backoff",
            low_ms=0,
            high_ms=MAX_INITIAL_BACKOFF_MS,
        )
    if policy.HasField("max_backoff"):
        maximum = duration_ms(
            v, policy.max_backoff, f"{field_path}.max_backoff", low_ms=0, high_ms=MAX_MAX_BACKOFF_MS
        )
    if initial is not None and maximum is not None and maximum < initial:
        v.add(f"{field_path}.max_backoff", "must not be less than initial_backoff")
    return Policy(max_attempts, backoff, initial, maximum)


def message(policy: Policy) -> task_pb2.RetryPolicy:
    """A RetryPolicy message with only the fields the policy sets."""
    out = task_pb2.RetryPolicy()
    if policy.max_attempts is not None:
        out.max_attempts = policy.max_attempts
    if policy.backoff is not None:
        out.backoff = enums_pb2.Backoff.Value(f"BACKOFF_{policy.backoff}")
    if policy.initial_backoff_ms is not None:
        out.initial_backoff.FromMilliseconds(policy.initial_backoff_ms)
    if policy.max_backoff_ms is not None:
        out.max_backoff.FromMilliseconds(policy.max_backoff_ms)
    return out
