"""Queue metrics that this replica counts as it makes transitions (summed over replicas
by Prometheus): tasks started and finished, run time, lease expiries, retries, dead
tasks, schedule fires and webhook deliveries. The state gauges (tasks by state, oldest
queued age) come from one cached query instead (loops/queue_metrics.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from prometheus_client import Counter, Histogram

from conveyor.server.store.task_rows import TaskRow

__all__ = [
    "DEAD",
    "FINISHED",
    "LEASE_EXPIRIES",
    "RETRIES",
    "RUN_SECONDS",
    "SCHEDULE_FIRES",
    "STARTED",
    "WEBHOOK_DELIVERIES",
    "count_expiries",
    "count_settled",
    "count_timeouts",
    "schedule_fired",
]

LABELS = ("project", "queue")
STARTED = Counter("conveyor_tasks_started_total", "Tasks leased to a worker.", LABELS)
FINISHED = Counter(
    "conveyor_tasks_finished_total",
    "Task attempts reported by workers, by outcome: succeeded, failed (for good) or "
    "retried (scheduled for another attempt).",
    [*LABELS, "outcome"],
)
RUN_SECONDS = Histogram(
    "conveyor_task_run_seconds",
    "Run time of reported attempts, from lease to report.",
    LABELS,
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 1800, 7200),
)
LEASE_EXPIRIES = Counter(
    "conveyor_lease_expiries_total",
    "Leases the reaper reclaimed because their worker stopped heartbeating.",
    LABELS,
)
RETRIES = Counter(
    "conveyor_task_retries_total",
    "Attempts that ended in a retry (a retryable failure or an expired lease).",
    LABELS,
)
DEAD = Counter(
    "conveyor_tasks_dead_total",
    "Tasks that ended without success after their last attempt (FAILED or INTERRUPTED).",
    LABELS,
)
SCHEDULE_FIRES = Counter(
    "conveyor_schedule_fires_total",
    "Schedule occurrences fired, by timing: on_time, or late (more than LATE_AFTER "
    "seconds after the nominal time, e.g. a catch-up).",
    [*LABELS, "timing"],
)
WEBHOOK_DELIVERIES = Counter(
    "conveyor_queue_webhook_deliveries_total",
    "Webhook deliveries that ended, by outcome (delivered, failed).",
    [*LABELS, "outcome"],
)
LATE_AFTER = 5.0


def count_settled(leased: Iterable[TaskRow], reported: Iterable[TaskRow]) -> None:
    """Counts leased tasks, and reported attempts by the state the report left them in.

    Counted per queue, then added once per counter: a batch settles a hundred tasks of
    one queue, and a `labels()` lookup and an increment per task were ~5 us a task."""
    started: dict[tuple[str, str], int] = {}
    for row in leased:
        key = (row.project, row.queue)
        started[key] = started.get(key, 0) + 1
    for key, n in started.items():
        STARTED.labels(*key).inc(n)
    ended: dict[tuple[str, str, str], int] = {}
    runs: dict[tuple[str, str], list[float]] = {}
    for row in reported:
        if row.state == "SUCCEEDED":
            outcome = "succeeded"
        elif row.state == "SCHEDULED":
            outcome = "retried"
        else:
            outcome = "failed"
        key3 = (row.project, row.queue, outcome)
        ended[key3] = ended.get(key3, 0) + 1
        end = row.end_time or row.update_time
        if row.start_time is not None and end is not None:
            runs.setdefault((row.project, row.queue), []).append(
                max((end - row.start_time).total_seconds(), 0)
            )
    for (project, queue, outcome), n in ended.items():
        if outcome == "retried":
            RETRIES.labels(project, queue).inc(n)
        elif outcome == "failed":
            DEAD.labels(project, queue).inc(n)
        FINISHED.labels(project, queue, outcome).inc(n)
    for key, seconds in runs.items():
        histogram = RUN_SECONDS.labels(*key)
        for value in seconds:
            histogram.observe(value)


def count_expiries(by_queue: Iterable[tuple[str, str, int, int]]) -> None:
    """Counts the reaper's reclaimed leases: (project, queue, retried, interrupted)."""
    for project, queue, retried, interrupted in by_queue:
        LEASE_EXPIRIES.labels(project, queue).inc(retried + interrupted)
        RETRIES.labels(project, queue).inc(retried)
        DEAD.labels(project, queue).inc(interrupted)


def count_timeouts(by_queue: Iterable[tuple[str, str, int, int]]) -> None:
    """Counts attempts ended past their execution_timeout: (project, queue, retried,
    ended). Not lease expiries: their leases were alive."""
    for project, queue, retried, ended in by_queue:
        RETRIES.labels(project, queue).inc(retried)
        DEAD.labels(project, queue).inc(ended)


def schedule_fired(project: str, queue: str, nominal: datetime, now: datetime) -> None:
    timing = "late" if (now - nominal).total_seconds() > LATE_AFTER else "on_time"
    SCHEDULE_FIRES.labels(project, queue, timing).inc()
