"""Dedupe keys: claiming a key for a new task, and reading or updating its holder.

Every function runs inside the caller's transaction: the claim, the insert of the
task that claimed, and any update of a holder commit (or roll back) together.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from conveyor.server.store import sql
from conveyor.server.store.task_rows import TaskRow, task_row

__all__ = ["claim", "holder", "update_holder"]

_SQL = sql.load_blocks("task_dedupe")


async def claim(
    conn: AsyncConnection[Any], project: str, key: str, task_id: uuid.UUID, window_ms: int
) -> bool:
    """True when the key was free or expired and now belongs to task_id."""
    cur = await conn.execute(
        _SQL["claim"],
        {"project": project, "key": key, "task_id": task_id, "window_ms": window_ms},
    )
    return await cur.fetchone() is not None


async def holder(conn: AsyncConnection[Any], project: str, key: str) -> TaskRow | None:
    """The task holding a live key, row-locked; None when the key is free again."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_SQL["holder"], {"project": project, "key": key})
        row = await cur.fetchone()
    return task_row(row) if row is not None else None


async def update_holder(
    conn: AsyncConnection[Any],
    project: str,
    task_id: uuid.UUID,
    *,
    key: str,
    input_text: str | None,
    debounce: bool,
    window_ms: int,
    sources: Sequence[str],
) -> TaskRow | None:
    """Replaces the holder's input (DEBOUNCE: also delays it) if it is in `sources`."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            _SQL["update"],
            {
                "project": project,
                "id": task_id,
                "key": key,
                "input": input_text,
                "debounce": debounce,
                "window_ms": window_ms,
                "sources": list(sources),
            },
        )
        row = await cur.fetchone()
    return task_row(row) if row is not None else None
