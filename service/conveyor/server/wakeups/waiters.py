"""In-process fan-out: waiters keyed by '<project>/<queue>', woken by the notifier.

A waiter is a flag plus an asyncio.Event its owner sleeps on; several waiters (for
example a Connect stream's queues) may share one Event, so a stream sleeps on a single
thing whatever woke it. Wake-ups are never lost: the flag stays set until the owner
takes it, so a notification that arrives while the owner is busy leasing is seen on
its next look.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from types import TracebackType

__all__ = ["Waiter", "Waiters"]


class Waiter:
    """One subscription to a set of keys."""

    __slots__ = ("_pending", "_registry", "event", "keys")

    def __init__(self, registry: Waiters, keys: frozenset[str], event: asyncio.Event) -> None:
        self._registry = registry
        self._pending = False
        self.keys = keys
        self.event = event

    def take(self) -> bool:
        """Whether a wake-up arrived since the last take (and clears it)."""
        pending, self._pending = self._pending, False
        return pending

    def wake(self) -> None:
        self._pending = True
        self.event.set()

    async def wait(self, seconds: float | None) -> bool:
        """Sleeps until woken or `seconds` passed (None: no limit); returns whether woken."""
        if not self._pending:
            self.event.clear()
            try:
                async with asyncio.timeout(seconds):
                    await self.event.wait()
            except TimeoutError:
                pass
        return self.take()

    def close(self) -> None:
        self._registry.remove(self)

    def __enter__(self) -> Waiter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class Waiters:
    """The registry of live waiters of one replica."""

    def __init__(self) -> None:
        self._by_key: dict[str, set[Waiter]] = {}
        self._all: set[Waiter] = set()

    def subscribe(self, keys: Iterable[str], event: asyncio.Event | None = None) -> Waiter:
        """A waiter woken by any of `keys` (and by every wake_all)."""
        waiter = Waiter(self, frozenset(keys), event or asyncio.Event())
        self._all.add(waiter)
        for key in waiter.keys:
            self._by_key.setdefault(key, set()).add(waiter)
        return waiter

    def remove(self, waiter: Waiter) -> None:
        self._all.discard(waiter)
        for key in waiter.keys:
            subscribers = self._by_key.get(key)
            if subscribers is not None:
                subscribers.discard(waiter)
                if not subscribers:
                    del self._by_key[key]

    def wake(self, key: str) -> int:
        """Wakes the waiters of `key`; returns how many."""
        subscribers = self._by_key.get(key, ())
        for waiter in subscribers:
            waiter.wake()
        return len(subscribers)

    def wake_all(self) -> int:
        for waiter in self._all:
            waiter.wake()
        return len(self._all)

    def __len__(self) -> int:
        return len(self._all)
