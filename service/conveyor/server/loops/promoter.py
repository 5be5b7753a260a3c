"""The promoter: SCHEDULED tasks become QUEUED at their schedule_time.

It sleeps until the earliest scheduled task falls due (at most `interval`), promotes
every due task with FOR UPDATE SKIP LOCKED (safe on N replicas), and NOTIFYs each
queue that got tasks so idle workers on every replica wake. `poke()` makes it look
again at once, e.g. after a failure scheduled a retry sooner than it planned to wake.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from psycopg_pool import AsyncConnectionPool

from conveyor.server.loops.periodic import PeriodicLoop
from conveyor.server.store import reaper as reaper_store

__all__ = ["Promoter"]

_MIN_SLEEP = 0.005


class Promoter(PeriodicLoop):
    name = "promoter"

    def __init__(
        self, pool: AsyncConnectionPool[Any], *, interval: float = 1.0, batch: int = 1000
    ) -> None:
        super().__init__(interval=interval)
        self._pool = pool
        self._batch = batch

    async def run_once(self, now: datetime | None = None) -> int:
        """Promotes every task due by `now` (default the database clock); returns how many."""
        promoted = 0
        async with self._pool.connection() as conn:
            while True:
                count = await reaper_store.promote_due(conn, now, self._batch)
                promoted += count
                if count < self._batch:
                    return promoted

    async def delay(self) -> float:
        async with self._pool.connection() as conn:
            due, now = await reaper_store.next_due(conn)
        if due is None:
            return self.interval
        wait = float((due - now).total_seconds())
        return min(max(wait, _MIN_SLEEP), self.interval)
