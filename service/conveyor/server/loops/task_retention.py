"""The task retention loop: deletes finished tasks past their queue's finished_task_ttl
(default 30 days; 0 keeps them forever) with their attempts and events.

Safe on N replicas: each batch is its own short transaction under an advisory lock
taken without waiting (store/queries/task_retention.sql), so one replica prunes at a
time, the others skip the pass, and no lock outlives a batch.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prometheus_client import Counter

from conveyor.server.loops.periodic import PeriodicLoop
from conveyor.server.store import task_retention
from conveyor.server.store.db import Pool

__all__ = ["DEFAULT_FINISHED_TASK_TTL", "DELETED", "TaskRetentionLoop"]

DEFAULT_FINISHED_TASK_TTL = timedelta(days=30)

DELETED = Counter(
    "conveyor_finished_tasks_deleted_total",
    "Finished tasks deleted by the retention loop for being past their finished_task_ttl.",
)


class TaskRetentionLoop(PeriodicLoop):
    name = "task_retention"

    def __init__(
        self,
        pool: Pool,
        default_ttl: timedelta = DEFAULT_FINISHED_TASK_TTL,
        *,
        interval: float = 60.0,
        batch: int = 500,
    ) -> None:
        super().__init__(interval=interval)
        self._pool = pool
        self.default_ttl = default_ttl
        self._batch = batch

    async def run_once(self, now: datetime | None = None) -> int:
        """Deletes the finished tasks due before `now`; returns how many."""
        at = now or datetime.now(UTC)
        default_ms = int(self.default_ttl.total_seconds() * 1000)
        deleted = 0
        async with self._pool.connection() as conn:
            while True:
                count = await task_retention.prune_batch(conn, at, default_ms, self._batch)
                if count is None:
                    break  # another replica holds the lock: it prunes this pass
                deleted += count
                DELETED.inc(count)
                if count < self._batch:
                    break
        return deleted
