"""The client's one backoff curve, and the full jitter its reconnects and re-sends use."""

from __future__ import annotations

import random

from conveyor.client.errors import ConveyorError


def exponential_step(failures: int, initial: float, maximum: float) -> float:
    """The longest wait after `failures` failures in a row (1 for the first): `initial`,
    doubling with each further failure, never above `maximum`."""
    return min(maximum, initial * 2.0 ** min(max(failures, 1) - 1, 60))


def full_jitter(
    failures: int, *, initial: float = 0.1, maximum: float = 5.0, rand: float | None = None
) -> float:
    """Seconds to wait after `failures` failures in a row: uniform over
    [0, min(maximum, initial * 2**failures)]."""
    if rand is None:
        rand = random.random()
    return rand * exponential_step(failures + 1, initial, maximum)


def reconnect_delay(failures: int, error: ConveyorError | None) -> float:
    """Seconds before the next Connect after `failures` in a row: full jitter, 0.1 s
    doubling up to 5 s, and never less than the server's RetryInfo (the key's worker
    budget is spent, a replica is stopping)."""
    delay = full_jitter(failures)
    if error is not None and error.retry_after is not None:
        delay = max(delay, error.retry_after.total_seconds())
    return delay
