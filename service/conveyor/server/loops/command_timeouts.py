"""Times out worker-control commands that no worker acknowledged before their deadline.

Safe on N replicas: each expired command is claimed with SKIP LOCKED and changes once.
Sleeps until the earliest open deadline (at most `interval`), so a command times out
within about a second of its deadline.
"""

from __future__ import annotations

from datetime import UTC, datetime

from conveyor.server.loops.periodic import PeriodicLoop
from conveyor.server.store import commands as command_store
from conveyor.server.store.db import Pool

__all__ = ["CommandTimeouts"]


class CommandTimeouts(PeriodicLoop):
    name = "command-timeouts"

    def __init__(self, pool: Pool, *, interval: float = 5.0) -> None:
        super().__init__(interval=interval)
        self._pool = pool
        self.timed_out = 0

    async def run_once(self) -> int:
        async with self._pool.connection() as conn, conn.transaction():
            count = await command_store.expire(conn)
        self.timed_out += count
        return count

    async def delay(self) -> float:
        async with self._pool.connection() as conn:
            due = await command_store.next_deadline(conn)
        if due is None:
            return self.interval
        wait = (due - datetime.now(UTC)).total_seconds() + 0.05
        return min(max(wait, 0.05), self.interval)
