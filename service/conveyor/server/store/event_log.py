"""Appending to a project's event log (in the caller's transaction)."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from conveyor.server.store import sql

_APPEND = sql.load("event_append")
_MAX_ID = sql.load("event_max_id")


async def append(
    conn: AsyncConnection[Any],
    *,
    project: str,
    type: str,
    subject: str = "",
    data: dict[str, Any] | None = None,
    task: dict[str, Any] | None = None,
) -> int:
    cur = await conn.execute(
        _APPEND,
        {
            "project": project,
            "type": type,
            "subject": subject,
            "task": Jsonb(task) if task is not None else None,
            "data": Jsonb(data or {}),
        },
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def max_id(conn: AsyncConnection[Any], project: str) -> int:
    cur = await conn.execute(_MAX_ID, {"project": project})
    row = await cur.fetchone()
    return int(row[0]) if row else 0
