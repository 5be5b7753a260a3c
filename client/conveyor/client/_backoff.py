"""The client's reconnect and re-send backoff: exponential, capped, full jitter."""

from __future__ import annotations

import random


def full_jitter(
    failures: int, *, initial: float = 0.1, maximum: float = 5.0, rand: float | None = None
) -> float:
    """Seconds to wait after `failures` failures in a row: uniform over
    [0, min(maximum, initial * 2**failures)]."""
    if rand is None:
        rand = random.random()
    return rand * min(maximum, initial * 2.0 ** min(failures, 60))
