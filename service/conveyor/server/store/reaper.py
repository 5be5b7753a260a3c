"""The maintenance statements of the lease reaper and the promoter (reaper_*.sql).

`now` replaces the database clock (tests); None uses it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from conveyor.server.store import sql

__all__ = ["Expired", "disconnect_stale_workers", "expire_leases", "next_due", "promote_due"]

_EXPIRE = sql.load("reaper_expire")
_TIMEOUT = sql.load("reaper_timeout")
_WORKERS = sql.load("reaper_workers")
_PROMOTE = sql.load("reaper_promote")
_NEXT_DUE = sql.load("reaper_next_due")


@dataclass(frozen=True, slots=True)
class Expired:
    """Leases reclaimed by one statement: tasks retried, and tasks that ended; and
    (project, queue, retried, interrupted) per queue."""

    retried: int
    interrupted: int
    by_queue: tuple[tuple[str, str, int, int], ...] = ()


async def expire_leases(
    conn: AsyncConnection[Any], now: datetime | None, limit: int, rand: float | None
) -> Expired:
    """Reclaims up to `limit` expired leases; `rand` fixes the retry jitter (None: the
    database draws one per task)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_EXPIRE, {"now": now, "limit": limit, "rand": rand})
        return _expired(await cur.fetchall(), "interrupted")


def _expired(rows: list[dict[str, Any]], ended: str) -> Expired:
    """Sums the statement's per-queue rows (project, queue, retried, `ended`)."""
    by_queue = tuple((r["project"], r["queue"], int(r["retried"]), int(r[ended])) for r in rows)
    return Expired(sum(q[2] for q in by_queue), sum(q[3] for q in by_queue), by_queue)


async def end_timed_out(
    conn: AsyncConnection[Any], now: datetime | None, limit: int, rand: float | None
) -> Expired:
    """Ends up to `limit` attempts past their execution_timeout (EXECUTION_TIMEOUT);
    `interrupted` counts the tasks that ended (FAILED, or INTERRUPTED after a cancel)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_TIMEOUT, {"now": now, "limit": limit, "rand": rand})
        return _expired(await cur.fetchall(), "ended")


async def disconnect_stale_workers(
    conn: AsyncConnection[Any], now: datetime | None, stale_ms: int, limit: int
) -> int:
    """Marks up to `limit` workers unheard of for `stale_ms` disconnected; how many."""
    cur = await conn.execute(_WORKERS, {"now": now, "stale_ms": stale_ms, "limit": limit})
    return int((await cur.fetchone() or (0,))[0])


async def promote_due(conn: AsyncConnection[Any], now: datetime | None, limit: int) -> int:
    """Makes up to `limit` SCHEDULED tasks whose time has come QUEUED; how many."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_PROMOTE, {"now": now, "limit": limit})
        row = await cur.fetchone()
    assert row is not None
    return int(row["promoted"])


async def next_due(conn: AsyncConnection[Any]) -> tuple[datetime | None, datetime]:
    """(when the next SCHEDULED task comes due or None, the database's now)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_NEXT_DUE)
        row = await cur.fetchone()
    assert row is not None
    return row["next_due"], row["now"]
