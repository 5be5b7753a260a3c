"""Task ids: UUIDv7 (RFC 9562), time-ordered and monotonic within a replica.

A task's create_time is the millisecond its id carries, so id order is creation
order exactly: ListTasks orders "create_time" by id, and the primary key serves it.
Within one millisecond the 12-bit `rand_a` field is a counter (RFC 9562 method 1),
so ids handed out by one replica strictly increase; on counter overflow the id
borrows the next millisecond rather than going backwards.
"""

from __future__ import annotations

import math
import os
import random
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

__all__ = ["TaskIds", "create_time_of", "lower_bound", "upper_bound"]

_VERSION = 0x7 << 76
_VARIANT = 0x2 << 62
_COUNTER_MAX = 0xFFF
_MAX_MS = (1 << 48) - 1


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


class TaskIds:
    """Hands out UUIDv7 ids; `clock` returns Unix milliseconds (injectable for tests)."""

    def __init__(self, clock: Callable[[], int] = _wall_ms) -> None:
        self._clock = clock
        self._last_ms = -1
        self._counter = 0
        # Ids need uniqueness, not secrecy: a generator seeded from the OS is enough
        # and far cheaper per id than os.urandom.
        self._random = random.Random(os.urandom(32))
        # The create_time of _last_ms: a burst's ids share their millisecond, so it is made
        # once per millisecond rather than once per id.
        self._time_ms = -1
        self._time = datetime.fromtimestamp(0, UTC)

    def next(self) -> tuple[uuid.UUID, datetime]:
        """A new id and the create_time it encodes."""
        ms = self._clock()
        if ms > self._last_ms:
            self._last_ms = ms
            # Start low in the counter's range so a burst rarely overflows it.
            self._counter = self._random.getrandbits(8)
        else:
            self._counter += 1
            if self._counter > _COUNTER_MAX:
                self._last_ms += 1
                self._counter = 0
        ms = self._last_ms
        if ms != self._time_ms:
            self._time_ms = ms
            self._time = datetime.fromtimestamp(ms / 1000, UTC)
        value = (
            (ms << 80) | _VERSION | (self._counter << 64) | _VARIANT | self._random.getrandbits(62)
        )
        return _uuid(value), self._time


def _uuid(value: int) -> uuid.UUID:
    """uuid.UUID(int=value) without the range check and keyword handling of its
    __init__ (`value` is a 128-bit UUIDv7 by construction): ~0.3 us less per id."""
    made = object.__new__(uuid.UUID)
    object.__setattr__(made, "int", value)
    object.__setattr__(made, "is_safe", uuid.SafeUUID.unknown)
    return made


def create_time_of(task_id: uuid.UUID) -> datetime:
    """The create_time a UUIDv7 task id carries."""
    return datetime.fromtimestamp((task_id.int >> 80) / 1000, UTC)


def lower_bound(moment: datetime) -> uuid.UUID:
    """The smallest id a task created at or after `moment` can have."""
    ms = math.floor(moment.timestamp() * 1000)
    return uuid.UUID(int=min(max(ms, 0), _MAX_MS) << 80)


def upper_bound(moment: datetime) -> uuid.UUID:
    """An id above every task created before `moment`."""
    ms = math.floor(moment.timestamp() * 1000) + 1
    return uuid.UUID(int=min(max(ms, 0), _MAX_MS) << 80)
