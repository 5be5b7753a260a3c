"""The per-project bulk-action limiter (#21 point 2).

BatchDeleteTasks, BatchRetryTasks, PurgeQueue and large ExportTasks each touch up to
every task of a project. One at a time per project keeps one caller's bulk work from
taking the pool and the tasks table from everyone else; a second one is refused at
once (FAILED_PRECONDITION, reason BULK_ACTION_RUNNING) and names the running one,
rather than queueing behind it: the caller decides whether to wait or give up.

The lock is a PostgreSQL advisory lock (store/bulk_locks.py), so it holds across
replicas. It is the transaction kind, held by a transaction left open for the action's
length on a connection of its own, so PostgreSQL drops it when the action ends, when the
holding session ends (a crashed replica never leaves a project locked), and it works
through a transaction-mode pooler. That transaction only takes the lock: it writes
nothing and holds no snapshot between statements, so it does not hold back vacuum.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from psycopg_pool import AsyncConnectionPool

from conveyor.server.errors import FailedPrecondition, PreconditionViolation
from conveyor.server.store import bulk_locks

__all__ = ["REASON", "BulkLimiter"]

REASON = "BULK_ACTION_RUNNING"
_PREFIX = "bulk: "


class BulkLimiter:
    """Runs one bulk action per project at a time, across replicas."""

    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        self._pool = pool

    @asynccontextmanager
    async def hold(self, project: str, action: str) -> AsyncIterator[None]:
        """Holds the project's bulk slot while the block runs; `action` names it (the
        method, and its command when there is one) to whoever is refused meanwhile.

        Raises FailedPrecondition (BULK_ACTION_RUNNING) when another action holds it.
        """
        async with self._pool.connection() as conn, conn.transaction():
            if not await bulk_locks.try_lock(conn, project, _PREFIX + action):
                raise _refusal(project, await bulk_locks.holder(conn, project))
            # The block's error (if any) rolls the transaction back, which frees the
            # lock just as the commit does.
            yield


def _refusal(project: str, label: str) -> FailedPrecondition:
    running = label.removeprefix(_PREFIX) or "another bulk action"
    parent = f"projects/{project}"
    return FailedPrecondition(
        f"{running} is running in {parent}; one bulk action runs at a time per project:"
        " try again when it has finished",
        reason=REASON,
        metadata={"running": running, "project": parent},
        violations=[PreconditionViolation("BULK_ACTION", parent, f"{running} is running")],
    )
