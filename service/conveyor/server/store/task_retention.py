"""Deleting finished tasks past their queue's finished_task_ttl (task_retention.sql)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from psycopg import AsyncConnection

from conveyor.server.store import sql

__all__ = ["prune_batch"]

_SQL = sql.load_blocks("task_retention")


async def prune_batch(
    conn: AsyncConnection[Any], now: datetime, default_ms: int, limit: int
) -> int | None:
    """Deletes up to `limit` expired finished tasks (with their attempts and events) in
    one short transaction; returns how many, or None when another replica is pruning."""
    async with conn.transaction():
        cur = await conn.execute(_SQL["lock"])
        locked = await cur.fetchone()
        if locked is None or not locked[0]:
            return None
        cur = await conn.execute(
            _SQL["prune"], {"now": now, "default_ms": default_ms, "limit": limit}
        )
        row = await cur.fetchone()
        return int(row[0]) if row is not None else 0
