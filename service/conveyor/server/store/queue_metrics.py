"""The queue metrics' one query (queue_metrics.sql)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from conveyor.server.store import sql

__all__ = ["QueueStates", "read"]

_READ = sql.load("queue_metrics")


@dataclass(frozen=True, slots=True)
class QueueStates:
    project: str
    queue: str
    state: str
    tasks: int
    oldest_queued_seconds: float | None


async def read(conn: AsyncConnection[Any]) -> list[QueueStates]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_READ)
        rows = await cur.fetchall()
    return [
        QueueStates(
            r["project"],
            r["queue"],
            r["state"],
            int(r["tasks"]),
            None if r["oldest_queued_seconds"] is None else float(r["oldest_queued_seconds"]),
        )
        for r in rows
    ]
