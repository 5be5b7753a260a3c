"""The client's one backoff curve, and the full jitter its reconnects and re-sends use."""

from __future__ import annotations

import random


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
