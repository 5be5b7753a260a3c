"""The retention loop: deletes events (and finished webhook deliveries, and the request
ids of creates other than CreateTask) past their age.

Safe on N replicas: each pass deletes in small batches, each its own short transaction
whose rows are chosen with FOR UPDATE SKIP LOCKED, so replicas pruning at once share the
rows instead of waiting on each other, and no transaction stays open long enough to hold
back the event cursors (which wait for every older writer to end).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from conveyor.server.loops.periodic import PeriodicLoop
from conveyor.server.store import event_rows as event_store
from conveyor.server.store import request_ids as request_id_store
from conveyor.server.store import webhooks as webhook_store
from conveyor.server.store.db import Pool

__all__ = ["RetentionLoop"]


class RetentionLoop(PeriodicLoop):
    name = "retention"

    def __init__(
        self, pool: Pool, retention: timedelta, *, interval: float = 60.0, batch: int = 5000
    ) -> None:
        super().__init__(interval=interval)
        self._pool = pool
        self.retention = retention
        self._batch = batch

    async def run_once(self, now: datetime | None = None) -> int:
        """Deletes what is older than `retention` before `now`; returns the events deleted."""
        cutoff = (now or datetime.now(UTC)) - self.retention
        deleted = 0
        async with self._pool.connection() as conn:
            while True:
                count = await event_store.prune(conn, cutoff, self._batch)
                deleted += count
                if count < self._batch:
                    break
            while await webhook_store.prune(conn, cutoff, self._batch) >= self._batch:
                pass
            # A retry past the retention gets a new resource, as AIP-155 allows.
            while await request_id_store.prune(conn, cutoff, self._batch) >= self._batch:
                pass
        return deleted
