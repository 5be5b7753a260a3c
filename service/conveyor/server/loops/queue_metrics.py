"""The queue metrics' state gauges: tasks by state and the oldest queued task's age,
per project and queue.

A scrape never touches the database: /metrics reports the last snapshot this loop
read. Every `interval` seconds each replica reads the shared snapshot row; only when it
is older than the interval does one replica (the one that gets a try-lock) run the
grouped count over the live tasks (queue_metrics.sql) and store it for the others. So
N replicas cost one count per interval whatever the scrape rate, and report the same
figures (graph them with max by (project, queue), not sum). The counters (started,
finished, ...) are per replica and are summed: domain/metrics.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from conveyor.server.loops.periodic import PeriodicLoop
from conveyor.server.states import State
from conveyor.server.store import queue_metrics as store
from conveyor.server.store.db import Pool
from conveyor.server.store.queue_metrics import QueueStates

__all__ = ["QueueMetricsLoop", "QueueStateCollector"]

LIVE_STATES = (State.SCHEDULED, State.QUEUED, State.AWAITING_APPROVAL, State.RUNNING)


class QueueStateCollector(Collector):
    """Reports the last snapshot a QueueMetricsLoop took (the newest, if several run
    in one process, as tests do)."""

    def __init__(self) -> None:
        self.rows: list[QueueStates] = []
        self.taken_at: float | None = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        tasks = GaugeMetricFamily(
            "conveyor_queue_tasks",
            "Live tasks by project, queue and state (SCHEDULED, QUEUED, AWAITING_APPROVAL, "
            "RUNNING), from the last snapshot.",
            labels=["project", "queue", "state"],
        )
        oldest = GaugeMetricFamily(
            "conveyor_queue_oldest_queued_seconds",
            "Seconds the oldest QUEUED task of a queue has been ready, from the last "
            "snapshot (0 when none is queued).",
            labels=["project", "queue"],
        )
        age = GaugeMetricFamily(
            "conveyor_queue_snapshot_age_seconds",
            "Seconds since the state gauges were last read from the database.",
        )
        queues: dict[tuple[str, str], float] = {}
        for row in self.rows:
            tasks.add_metric([row.project, row.queue, row.state], row.tasks)
            key = (row.project, row.queue)
            queues[key] = max(queues.get(key, 0.0), row.oldest_queued_seconds or 0.0)
        for (project, queue), seconds in sorted(queues.items()):
            oldest.add_metric([project, queue], seconds)
        if self.taken_at is not None:
            age.add_metric([], time.monotonic() - self.taken_at)
        yield tasks
        yield oldest
        yield age


COLLECTOR = QueueStateCollector()
REGISTRY.register(COLLECTOR)


class QueueMetricsLoop(PeriodicLoop):
    name = "queue-metrics"

    def __init__(self, pool: Pool, *, interval: float = 15.0) -> None:
        super().__init__(interval=interval)
        self._pool = pool

    async def run_once(self, *, max_age: float | None = None) -> bool:
        """Reads the shared snapshot, counting afresh if it is older than `max_age`
        (default: the interval); returns whether this replica counted."""
        age = self.interval if max_age is None else max_age
        async with self._pool.connection() as conn:
            rows, counted = await store.shared(conn, age)
        COLLECTOR.rows, COLLECTOR.taken_at = rows, time.monotonic()
        return counted
