"""The statistics loop: keeps the planner's view of `tasks` current (see
store/table_statistics.py for why autovacuum alone is too slow for a queue's bursts).

Safe on N replicas: a replica analyzes a table only under a transaction-level advisory
lock it could take without waiting, so one does it and the others skip it.
"""

from __future__ import annotations

from conveyor.server.loops.periodic import PeriodicLoop
from conveyor.server.store import table_statistics
from conveyor.server.store.db import Pool

__all__ = ["StatisticsLoop"]

TABLES = ("tasks",)


class StatisticsLoop(PeriodicLoop):
    name = "statistics"

    def __init__(
        self,
        pool: Pool,
        *,
        interval: float = 5.0,
        min_changes: int = 1000,
        fraction: float = 0.1,
    ) -> None:
        super().__init__(interval=interval)
        self._pool = pool
        self.min_changes = min_changes
        """Changed rows below which a table is never re-analyzed (small tables plan well)."""
        self.fraction = fraction
        """Changed rows, as a fraction of the table, that make its statistics stale."""

    async def run_once(self) -> list[str]:
        """Analyzes the stale tables; returns their names."""
        async with self._pool.connection() as conn:
            return await table_statistics.analyze_stale(
                conn, TABLES, min_changes=self.min_changes, fraction=self.fraction
            )
