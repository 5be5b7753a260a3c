"""The live replicas (replica_*.sql): each beats, and counts the others that do."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection

from conveyor.server.store import sql

__all__ = ["beat", "leave"]

_BEAT = sql.load("replica_beat")
_LEAVE = sql.load("replica_leave")


async def beat(conn: AsyncConnection[Any], replica: str, ttl: float) -> int:
    """Records `replica` live now; returns the replicas live within `ttl` seconds,
    itself included."""
    cur = await conn.execute(_BEAT, {"id": replica, "ttl": ttl})
    row = await cur.fetchone()
    return int(row[0]) if row is not None else 1


async def leave(conn: AsyncConnection[Any], replica: str) -> None:
    await conn.execute(_LEAVE, {"id": replica})
