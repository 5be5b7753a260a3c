"""The lease reaper: reclaims expired leases and forgets workers that went silent.

Leases expire by the database clock alone (`lease_expire_time < now()`), so replicas
whose clocks disagree still agree on which leases are dead. Each pass locks expired
tasks with FOR UPDATE SKIP LOCKED: N replicas reaping at once reclaim each lease once.
An expired lease counts as an attempt: the task is retried after its backoff when
attempts are left, else it ends INTERRUPTED ("lease expired"); a task whose cancel was
requested ends INTERRUPTED either way. The same pass ends attempts that ran past their
task's execution_timeout (store/queries/reaper_timeout.sql), heartbeating or not.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg_pool import AsyncConnectionPool

from conveyor.server.domain.metrics import count_expiries, count_timeouts
from conveyor.server.domain.workers import STALE_AFTER
from conveyor.server.loops.periodic import PeriodicLoop
from conveyor.server.store import reaper as reaper_store

__all__ = ["Reaped", "Reaper"]


@dataclass(frozen=True, slots=True)
class Reaped:
    """What one pass did."""

    retried: int = 0
    interrupted: int = 0
    disconnected: int = 0
    timed_out: int = 0
    """Attempts ended for running past their execution_timeout (retried or ended)."""

    @property
    def reclaimed(self) -> int:
        return self.retried + self.interrupted


class Reaper(PeriodicLoop):
    name = "reaper"

    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        *,
        interval: float = 1.0,
        stale_after: float = STALE_AFTER,
        batch: int = 500,
        rand: Callable[[], float] | None = None,
        on_retry: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(interval=interval)
        self._pool = pool
        self._stale_ms = int(stale_after * 1000)
        self._batch = batch
        self._rand = rand
        self._on_retry = on_retry

    async def run_once(self, now: datetime | None = None) -> Reaped:
        """One pass; `now` replaces the database clock (tests)."""
        retried = interrupted = disconnected = timed_out = 0
        async with self._pool.connection() as conn:
            while True:
                rand = self._rand() if self._rand is not None else None
                expired = await reaper_store.expire_leases(conn, now, self._batch, rand)
                retried += expired.retried
                interrupted += expired.interrupted
                count_expiries(expired.by_queue)
                if expired.retried + expired.interrupted < self._batch:
                    break
            while True:
                rand = self._rand() if self._rand is not None else None
                ended = await reaper_store.end_timed_out(conn, now, self._batch, rand)
                retried += ended.retried
                timed_out += ended.retried + ended.interrupted
                count_timeouts(ended.by_queue)
                if ended.retried + ended.interrupted < self._batch:
                    break
            while True:
                count = await reaper_store.disconnect_stale_workers(
                    conn, now, self._stale_ms, self._batch
                )
                disconnected += count
                if count < self._batch:
                    break
        if retried and self._on_retry is not None:
            self._on_retry()
        return Reaped(retried, interrupted, disconnected, timed_out)
