"""One live subscriber: a bounded buffer between a project's tail and a stream."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence

from conveyor.server.store.event_rows import EventRow

__all__ = ["Closed", "Overflowed", "Subscription"]


class Overflowed(Exception):
    """The subscriber fell more than its buffer behind and was detached."""


class Closed(Exception):
    """The replica is shutting down."""


class Subscription:
    """Events handed over by a tail, waiting for the stream to send them.

    `position`: the last event put in the buffer (or where the subscriber attached, if
    later): events up to it are never taken again. Events the filter leaves out do not
    move it; the tail's position covers them.
    """

    __slots__ = ("_buffer", "_capacity", "_ready", "closed", "overflowed", "position")

    def __init__(self, position: int, capacity: int) -> None:
        self.position = position
        self._capacity = capacity
        self._buffer: deque[EventRow] = deque()
        self._ready = asyncio.Event()
        self.overflowed = False
        self.closed = False

    def __len__(self) -> int:
        return len(self._buffer)

    def offer(self, rows: Sequence[EventRow]) -> bool:
        """Takes the rows (in id order) after its position; False (and drops the buffer)
        on overflow."""
        if self.overflowed or self.closed:
            return False
        if rows and rows[0].id > self.position and len(self._buffer) + len(rows) <= self._capacity:
            # The usual case, all new and room for all: no question per row.
            self._buffer.extend(rows)
            self.position = rows[-1].id
            self._ready.set()
            return True
        added = False
        for row in rows:
            if row.id <= self.position:
                continue
            if len(self._buffer) >= self._capacity:
                self.overflowed = True
                # Freed at once: the stream resumes from what it sent, not from here.
                self._buffer.clear()
                self._ready.set()
                return False
            self._buffer.append(row)
            self.position = row.id
            added = True
        if added:
            # Only events wake the stream: hundreds of idle subscribers must not all
            # run whenever the tail moves past events they do not want.
            self._ready.set()
        return True

    def close(self) -> None:
        self.closed = True
        self._ready.set()

    async def take(self, idle: float, most: int) -> list[EventRow]:
        """Up to `most` events, oldest first; [] when none came for `idle` seconds.

        Taking several at once lets the stream render them together and costs one wait
        per batch rather than per event. Taken events leave the buffer, so a stream holds
        at most its buffer plus one batch. Raises Overflowed once the subscriber was cut
        off, Closed on shutdown.
        """
        buffer = self._buffer
        if not buffer and not (self.overflowed or self.closed):
            loop = asyncio.get_running_loop()
            deadline = loop.time() + idle
            # Woken by events, overflow or close; otherwise idle until a keep-alive is due.
            while not buffer and not (self.overflowed or self.closed):
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                self._ready.clear()
                try:
                    async with asyncio.timeout(remaining):
                        await self._ready.wait()
                except TimeoutError:
                    break
        if self.overflowed:
            raise Overflowed
        if self.closed:
            raise Closed
        if len(buffer) <= most:
            rows = list(buffer)
            buffer.clear()
            return rows
        return [buffer.popleft() for _ in range(most)]
