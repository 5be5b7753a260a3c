"""Task log lines in SQL (queries/task_logs.sql, conveyor_append_task_logs)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from conveyor.server.store import sql

__all__ = ["Appended", "LogLineRow", "TaskLogState", "append", "lines", "task_state"]

_SQL = sql.load_blocks("task_logs")


@dataclass(frozen=True, slots=True)
class Appended:
    """Where an attempt's log stands after an append."""

    attempt: int
    last_seq: int
    dropped: int


@dataclass(frozen=True, slots=True)
class LogLineRow:
    attempt: int
    seq: int
    time: datetime
    stream: str
    level: str
    message: str
    fields: dict[str, Any] | None
    dropped_count: int


@dataclass(frozen=True, slots=True)
class TaskLogState:
    state: str
    attempt: int
    """The task's current attempt (0 before its first lease)."""
    started: bool
    """The attempt asked about (or the current one) exists."""
    ended: bool


async def append(
    conn: AsyncConnection[Any],
    project: str,
    items: Sequence[tuple[uuid.UUID, uuid.UUID, str]],
    max_bytes: int,
    max_lines: int,
) -> list[Appended | None]:
    """Appends (task id, lease id, lines as JSON text) items in order; None for an item
    whose lease is not its task's current one."""
    cur = await conn.execute(
        _SQL["append"],
        {
            "project": project,
            "ids": [i[0] for i in items],
            "lease_ids": [i[1] for i in items],
            "lines": f"[{','.join(i[2] for i in items)}]",
            "max_bytes": max_bytes,
            "max_lines": max_lines,
        },
    )
    return [
        None if attempt is None else Appended(attempt, last, dropped)
        for _, attempt, last, dropped in await cur.fetchall()
    ]


async def task_state(
    conn: AsyncConnection[Any], project: str, id: uuid.UUID, attempt: int = 0
) -> TaskLogState | None:
    cur = await conn.execute(_SQL["task"], {"project": project, "id": id, "attempt": attempt})
    row = await cur.fetchone()
    return None if row is None else TaskLogState(*row)


async def lines(
    conn: AsyncConnection[Any],
    project: str,
    id: uuid.UUID,
    *,
    attempt: int,
    after: tuple[int, int],
    limit: int,
    newest_first: bool = False,
) -> list[LogLineRow]:
    """Up to `limit` lines after the (attempt, seq) position, oldest first; or before
    it, newest first."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            _SQL["lines_desc" if newest_first else "lines"],
            {
                "project": project,
                "id": id,
                "attempt": attempt,
                "after_attempt": after[0],
                "after_seq": after[1],
                "limit": limit,
            },
        )
        return [LogLineRow(**r) for r in await cur.fetchall()]
