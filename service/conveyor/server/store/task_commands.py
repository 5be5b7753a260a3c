"""What operator commands do to tasks: requeue (RetryTask, BatchRetryTasks) and purge."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from conveyor.server.store import sql
from conveyor.server.store.task_rows import TaskRow, task_row

__all__ = ["purge_queue", "requeue", "set_kind_rate"]

_REQUEUE = sql.load("task_requeue")
_PURGE = sql.load("queue_purge")


async def requeue(
    conn: AsyncConnection[Any],
    project: str,
    ids: Sequence[uuid.UUID],
    *,
    sources: Sequence[str],
    reason: str,
    command: str,
    input_json: str | None = None,
) -> list[TaskRow]:
    """QUEUED again as a new attempt, for those of `ids` in a source state."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            _REQUEUE,
            {
                "project": project,
                "ids": list(ids),
                "sources": list(sources),
                "reason": reason,
                "command": command,
                "set_input": input_json is not None,
                "input": input_json,
            },
        )
        return [task_row(r) for r in await cur.fetchall()]


async def purge_queue(conn: AsyncConnection[Any], project: str, queue: str, *, command: str) -> int:
    """Cancels the queue's QUEUED tasks with reason 'purged'; how many."""
    cur = await conn.execute(_PURGE, {"project": project, "queue": queue, "command": command})
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def set_kind_rate(
    conn: AsyncConnection[Any], project: str, kind: str, worker: str, rate: str
) -> None:
    """Sets ("" clears) the lease rate limit of a task kind for a worker ("" = every one)."""
    params = {"project": project, "kind": kind, "worker": worker, "rate": rate}
    await conn.execute(
        sql.load("rate_limit_set_kind") if rate else sql.load("rate_limit_clear_kind"), params
    )
