"""The lease reaper: reclaims expired leases and forgets workers that went silent.

Leases expire by the database clock alone (`lease_expire_time < now()`), so replicas
whose clocks disagree still agree on which leases are dead. Each pass locks expired
tasks with FOR UPDATE SKIP LOCKED: N replicas reaping at once reclaim each lease once.
An expired lease counts as an attempt: the task is retried after its backoff when
attempts are left, else it ends INTERRUPTED ("lease expired"); a task whose cancel was
requested ends INTERRUPTED either way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from conveyor.server.domain.workers import STALE_AFTER
from conveyor.server.loops.periodic import PeriodicLoop
from conveyor.server.store import sql

__all__ = ["Reaped", "Reaper"]

_EXPIRE = sql.load("reaper_expire")
_WORKERS = sql.load("reaper_workers")


@dataclass(frozen=True, slots=True)
class Reaped:
    """What one pass did."""

    retried: int = 0
    interrupted: int = 0
    disconnected: int = 0

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
        retried = interrupted = disconnected = 0
        async with self._pool.connection() as conn:
            while True:
                async with conn.cursor(row_factory=dict_row) as cur:
                    await cur.execute(
                        _EXPIRE,
                        {
                            "now": now,
                            "limit": self._batch,
                            "rand": self._rand() if self._rand is not None else None,
                        },
                    )
                    row = await cur.fetchone()
                assert row is not None
                retried += row["retried"]
                interrupted += row["interrupted"]
                if row["retried"] + row["interrupted"] < self._batch:
                    break
            while True:
                gone = await conn.execute(
                    _WORKERS, {"now": now, "stale_ms": self._stale_ms, "limit": self._batch}
                )
                count = int((await gone.fetchone() or (0,))[0])
                disconnected += count
                if count < self._batch:
                    break
        if retried and self._on_retry is not None:
            self._on_retry()
        return Reaped(retried, interrupted, disconnected)
