"""The approval-timeout loop: applies each overdue task's approval_timeout_action.

A task waiting for approval longer than its approval_timeout (from create_time) is
approved or rejected as its action says, with approver `system`. Rows are taken FOR
UPDATE SKIP LOCKED, so N replicas share the work without deciding a task twice.
"""

from __future__ import annotations

from typing import Any

from psycopg_pool import AsyncConnectionPool

from conveyor.server.loops.periodic import PeriodicLoop
from conveyor.server.store import approvals

__all__ = ["ApprovalTimeouts"]


class ApprovalTimeouts(PeriodicLoop):
    name = "approval-timeouts"

    def __init__(
        self, pool: AsyncConnectionPool[Any], *, interval: float = 1.0, batch: int = 500
    ) -> None:
        super().__init__(interval=interval)
        self._pool = pool
        self._batch = batch

    async def run_once(self) -> int:
        """Decides every overdue task; returns how many."""
        decided = 0
        while True:
            async with self._pool.connection() as conn, conn.transaction():
                n = await approvals.decide_timed_out(conn, limit=self._batch)
            decided += n
            if n < self._batch:
                return decided
