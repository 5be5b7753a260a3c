"""Task dependencies in the store: attaching a new task to the tasks it depends on.

Every function runs in the caller's transaction, the one that inserts the new task:
its edges, its waiting count and the resolution of dependencies that had already
ended commit with it. Dependencies that end later are resolved by the database itself
(the triggers of migration 0023), in the transaction that ends them.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from conveyor.server.store import sql
from conveyor.server.store.task_rows import TaskRow, task_row

__all__ = ["attach", "lock", "outside"]

_SQL = sql.load_blocks("task_dependencies")


async def lock(
    conn: AsyncConnection[Any], project: str, ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, str]:
    """The state of each dependency that exists, locked until the transaction ends.

    A dependency's end cannot pass unseen: either it committed before (its state here
    is terminal), or this one holds it first and that end then resolves the new edges
    (a row being changed refuses the lock at once: LockNotAvailable, and the caller
    tries again).
    """
    params = {"project": project, "ids": list(ids)}
    await conn.execute(_SQL["flag"], params)
    cur = await conn.execute(_SQL["lock"], params)
    return {row[0]: row[1] for row in await cur.fetchall()}


async def attach(
    conn: AsyncConnection[Any],
    project: str,
    task_id: uuid.UUID,
    ids: Sequence[uuid.UUID],
    *,
    policy: str,
    ended: dict[uuid.UUID, str],
) -> int:
    """Makes the new task wait for `ids`, then resolves those in `ended` (id -> its
    terminal state); returns how many tasks that moved (0 or 1: the new one)."""
    params = {"project": project, "id": task_id, "ids": list(ids), "policy": policy}
    await conn.execute(_SQL["attach"], params)
    if not ended:
        return 0
    await conn.execute(
        _SQL["ended"],
        {"project": project, "id": task_id, "ids": list(ended), "states": list(ended.values())},
    )
    cur = await conn.execute(_SQL["count"])
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def outside(
    conn: AsyncConnection[Any], project: str, ids: Sequence[uuid.UUID], *, limit: int
) -> list[TaskRow]:
    """Up to `limit` tasks that tasks `ids` depend on, not among `ids`, oldest first."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_SQL["outside"], {"project": project, "ids": list(ids), "limit": limit})
        return [task_row(r) for r in await cur.fetchall()]
