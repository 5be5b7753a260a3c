"""The heartbeats of a Worker's running tasks: one timer for all of them.

Each task is due a heartbeat every third of its lease (or the Welcome's interval, when
shorter). One loop timer, set for the earliest due beat, sends the beats that are due
(and those due within a tenth of their interval, so tasks that started close together
share a wake-up) and sets itself again. A task costs nothing here but its due time:
no asyncio task, event or timer of its own, which a worker running thousands of short
tasks a second would pay for each of them. A task that ends simply leaves the running
set; the timer finds it gone.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Mapping
from typing import Protocol

from conveyor.client._requests import Seconds
from conveyor.client._stream import Stream
from conveyor.v1 import worker_pb2

MIN_INTERVAL = 0.05
"""Seconds: the shortest interval between two beats of a task."""
EARLY = 0.1
"""A beat due within this fraction of its interval goes with the one due now."""


class Beating(Protocol):
    lease_seconds: float
    next_beat: float
    beat_every: float

    def heartbeat(self, override: Seconds | None) -> worker_pb2.ConnectRequest: ...


def beat_seconds(lease_seconds: float, welcome: float | None) -> float:
    """A task's interval: a third of its lease, or the Welcome's when shorter."""
    seconds = lease_seconds / 3
    if welcome is not None:
        seconds = min(seconds, welcome)
    return max(seconds, MIN_INTERVAL)


class Heartbeats:
    """Sends the heartbeats of the tasks in `running` on the open stream."""

    def __init__(
        self,
        running: Mapping[tuple[str, str], Beating],
        stream: Callable[[], Stream | None],
        interval: Callable[[], float | None],
        override: Seconds | None,
    ) -> None:
        self._running = running
        self.stream = stream
        """The worker's open stream, if any."""
        self._interval = interval
        self._override = override
        self._timer: asyncio.TimerHandle | None = None
        self._at = math.inf

    def add(self, entry: Beating, loop: asyncio.AbstractEventLoop) -> None:
        """A task that starts now: its first beat is one interval away."""
        entry.beat_every = beat_seconds(entry.lease_seconds, self._interval())
        entry.next_beat = loop.time() + entry.beat_every
        if entry.next_beat < self._at:
            self._set(entry.next_beat, loop)

    def _set(self, at: float, loop: asyncio.AbstractEventLoop) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._at = at
        self._timer = loop.call_at(at, self._beat, loop)

    def _beat(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer, self._at = None, math.inf
        now = loop.time()
        stream = self.stream()
        welcome = self._interval()
        earliest = math.inf
        for entry in list(self._running.values()):
            if entry.next_beat - EARLY * entry.beat_every <= now:
                if stream is not None and stream.open:
                    stream.send(entry.heartbeat(self._override))
                entry.beat_every = beat_seconds(entry.lease_seconds, welcome)
                entry.next_beat = now + entry.beat_every
            earliest = min(earliest, entry.next_beat)
        if earliest < math.inf:
            self._set(earliest, loop)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._at = None, math.inf
