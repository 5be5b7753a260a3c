"""The scheduler loop: fires due schedules and event schedules, safe on N replicas.

Each pass locks due schedules with FOR UPDATE SKIP LOCKED, so replicas share the work
without waiting on each other, and every occurrence is recorded under a unique key in
the transaction that creates its task: an occurrence fires exactly once even when two
replicas, or a crash and a restart, try it twice.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from psycopg_pool import AsyncConnectionPool

from conveyor.server.domain.schedule_firing import ScheduleFiring
from conveyor.server.logging import get_logger
from conveyor.server.store import schedules as schedule_store

_log = get_logger(__name__)
BATCH = 100


class SchedulerLoop:
    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        firing: ScheduleFiring,
        *,
        interval: float = 1.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._pool = pool
        self._firing = firing
        self._interval = interval
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self._passes = 0
        self._pass_done = asyncio.Condition()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="conveyor-scheduler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def wait_for_pass(self) -> None:
        """Returns after the next complete pass (for tests; wrap in asyncio.timeout)."""
        async with self._pass_done:
            seen = self._passes
            await self._pass_done.wait_for(lambda: self._passes > seen)

    async def run_once(self, now: datetime | None = None) -> int:
        """One pass over due and event schedules; returns the tasks created."""
        now = now or self._clock()
        created = 0
        while True:
            async with self._pool.connection() as conn, conn.transaction():
                rows = await schedule_store.lock_due(conn, now, BATCH)
                for row in rows:
                    created += await self._firing.fire_due(conn, row, now)
            if len(rows) < BATCH:
                break
        async with self._pool.connection() as conn, conn.transaction():
            for row in await schedule_store.lock_event_schedules(conn, BATCH):
                created += await self._firing.fire_events(conn, row, now)
        return created

    async def _run(self) -> None:
        while True:
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                # A pass that fails (a lost connection, a deadlock) rolls back whole;
                # the next pass retries the same occurrences.
                _log.exception("scheduler pass failed")
            async with self._pass_done:
                self._passes += 1
                self._pass_done.notify_all()
            await asyncio.sleep(self._interval)
