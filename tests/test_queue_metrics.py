"""Queue metrics on /metrics, per project and queue: the state gauges from the cached
snapshot, the counters the replica keeps as tasks start, finish, retry, die and lose
their lease, and the Grafana board's expressions naming only exported metrics."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest_asyncio
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from conveyor.client import AsyncClient
from conveyor.server.app import ConveyorServer
from conveyor.server.domain import metrics
from conveyor.server.loops.queue_metrics import QueueMetricsLoop
from conveyor.server.loops.reaper import Reaper
from conveyor.server.loops.scheduler import SchedulerLoop
from conveyor.server.store.task_rows import TASK_COLUMNS, TaskRow
from conveyor.v1 import enums_pb2, schedule_pb2

T = TypeVar("T")
BOARD = Path(__file__).resolve().parent.parent / "deploy" / "grafana" / "conveyor-queues.json"


@pytest_asyncio.fixture
async def client(server: ConveyorServer, keys: dict[str, str]) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(server.grpc_target, api_key=keys["operator"], project="alpha") as c:
        yield c


async def scrape(server: ConveyorServer) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """/metrics as {(sample name, labels): value}."""
    async with httpx.AsyncClient(base_url=server.http_base_url, timeout=5) as http:
        text = (await http.get("/metrics")).text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def loop_of(server: ConveyorServer, kind: type[T]) -> T:
    return next(lp for lp in server.context.loops if isinstance(lp, kind))


async def test_state_gauges_come_from_the_snapshot_not_the_scrape(
    server: ConveyorServer, client: AsyncClient
) -> None:
    queue = f"q{uuid.uuid4().hex[:8]}"
    for n in range(3):
        await client.create_task("mail.send", {"n": n}, queue=queue)
    await client.create_task(
        "mail.send", {}, queue=queue, schedule_time=datetime.now(UTC) + timedelta(hours=1)
    )
    assert await loop_of(server, QueueMetricsLoop).run_once(max_age=0)
    samples = await scrape(server)
    where = {"project": "alpha", "queue": queue}
    assert value(samples, "conveyor_queue_tasks", **where, state="QUEUED") == 3
    assert value(samples, "conveyor_queue_tasks", **where, state="SCHEDULED") == 1
    assert value(samples, "conveyor_queue_oldest_queued_seconds", **where) >= 0
    assert ("conveyor_queue_oldest_queued_seconds", frozenset(where.items())) in samples
    # A new task shows up at the next snapshot, not at the next scrape.
    await client.create_task("mail.send", {}, queue=queue)
    assert value(await scrape(server), "conveyor_queue_tasks", **where, state="QUEUED") == 3
    assert await loop_of(server, QueueMetricsLoop).run_once(max_age=0)
    assert value(await scrape(server), "conveyor_queue_tasks", **where, state="QUEUED") == 4


async def test_replicas_share_one_count_per_interval(
    server: ConveyorServer, replica: ConveyorServer, client: AsyncClient
) -> None:
    queue = f"q{uuid.uuid4().hex[:8]}"
    await client.create_task("mail.send", {}, queue=queue)
    assert await loop_of(server, QueueMetricsLoop).run_once(max_age=0)
    # The other replica, within the interval, reads the stored snapshot: no count.
    await client.create_task("mail.send", {}, queue=queue)
    assert not await loop_of(replica, QueueMetricsLoop).run_once(max_age=3600)
    where = {"project": "alpha", "queue": queue, "state": "QUEUED"}
    assert value(await scrape(replica), "conveyor_queue_tasks", **where) == 1
    # Once the snapshot is older than the interval, the next reader counts again.
    assert await loop_of(replica, QueueMetricsLoop).run_once(max_age=0)
    assert value(await scrape(replica), "conveyor_queue_tasks", **where) == 2


async def test_counters_follow_starts_outcomes_retries_deaths_and_expiries(
    server: ConveyorServer, client: AsyncClient, keys: dict[str, str]
) -> None:
    queue = f"q{uuid.uuid4().hex[:8]}"
    for n in range(4):
        await client.create_task(
            "mail.send", {"n": n}, queue=queue, retry_policy={"max_attempts": 3}
        )
    async with AsyncClient(server.grpc_target, api_key=keys["worker"], project="alpha") as worker:
        leases = await worker.lease_tasks([queue], worker="w1", max_tasks=4)
        assert len(leases) == 4
        ok, retry, dead, _lost = leases
        await worker.complete_task(ok.task.name, ok.lease_id, {"done": True})
        await worker.fail_task(retry.task.name, retry.lease_id, message="try again")
        await worker.fail_task(dead.task.name, dead.lease_id, message="no", retryable=False)
    # The last lease runs out: the reaper, told it is an hour later, reclaims it.
    await loop_of(server, Reaper).run_once(now=datetime.now(UTC) + timedelta(hours=1))
    samples = await scrape(server)
    where = {"project": "alpha", "queue": queue}
    assert value(samples, "conveyor_tasks_started_total", **where) == 4
    finished = "conveyor_tasks_finished_total"
    assert value(samples, finished, **where, outcome="succeeded") == 1
    assert value(samples, finished, **where, outcome="retried") == 1
    assert value(samples, finished, **where, outcome="failed") == 1
    assert value(samples, "conveyor_task_run_seconds_count", **where) == 3
    assert value(samples, "conveyor_lease_expiries_total", **where) == 1
    assert value(samples, "conveyor_task_retries_total", **where) == 2  # a failure, a loss
    assert value(samples, "conveyor_tasks_dead_total", **where) == 1


async def test_execution_timeouts_count_as_retries_not_lease_expiries(
    server: ConveyorServer, client: AsyncClient, keys: dict[str, str]
) -> None:
    queue = f"q{uuid.uuid4().hex[:8]}"
    await client.create_task(
        "mail.send",
        {},
        queue=queue,
        execution_timeout=1,
        lease_duration=7200,
        retry_policy={"max_attempts": 3},
    )
    async with AsyncClient(server.grpc_target, api_key=keys["worker"], project="alpha") as w:
        assert len(await w.lease_tasks([queue], worker="w1")) == 1
    reaped = await loop_of(server, Reaper).run_once(now=datetime.now(UTC) + timedelta(minutes=10))
    assert reaped.timed_out >= 1
    samples = await scrape(server)
    where = {"project": "alpha", "queue": queue}
    assert value(samples, "conveyor_task_retries_total", **where) == 1
    assert value(samples, "conveyor_lease_expiries_total", **where) == 0


async def test_schedule_fires_count_on_time_and_late(
    server: ConveyorServer, client: AsyncClient
) -> None:
    queue = f"q{uuid.uuid4().hex[:8]}"
    schedule = schedule_pb2.Schedule(
        spec=schedule_pb2.ScheduleSpec(kind=enums_pb2.SCHEDULE_KIND_CRON, expression="* * * * *"),
        task_template=schedule_pb2.TaskTemplate(kind="report.build", queue=queue),
        overlap_policy=enums_pb2.OVERLAP_POLICY_ALLOW_ALL,  # the first task is still queued
    )
    saved = await client.schedules.CreateSchedule(
        schedule_pb2.CreateScheduleRequest(
            parent="projects/alpha", schedule_id=queue, schedule=schedule
        )
    )
    due = saved.next_run_time.ToDatetime(tzinfo=UTC)
    scheduler = loop_of(server, SchedulerLoop)
    assert await scheduler.run_once(now=due + timedelta(seconds=1)) == 1  # on time
    # The next minute's occurrence fires 30 s after its time: late, within the grace.
    assert await scheduler.run_once(now=due + timedelta(seconds=90)) == 1
    samples = await scrape(server)
    where = {"project": "alpha", "queue": queue}
    assert value(samples, "conveyor_schedule_fires_total", **where, timing="on_time") == 1
    assert value(samples, "conveyor_schedule_fires_total", **where, timing="late") == 1


def board_expressions() -> list[str]:
    board = json.loads(BOARD.read_text())
    return [t["expr"] for panel in board["panels"] for t in panel.get("targets", [])]


async def test_every_grafana_expression_names_an_exported_metric(server: ConveyorServer) -> None:
    async with httpx.AsyncClient(base_url=server.http_base_url, timeout=5) as http:
        text = (await http.get("/metrics")).text
    # From the TYPE lines: a labelled series nothing has counted yet has no samples.
    exported: set[str] = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE):
        exported.add(name)
        if kind == "histogram":
            exported |= {f"{name}_bucket", f"{name}_count", f"{name}_sum"}
    expressions = board_expressions()
    assert expressions
    used = {name for expr in expressions for name in re.findall(r"\b(conveyor_[a-z_]+)\b", expr)}
    assert used, "the board's expressions name Conveyor metrics"
    assert used <= exported, f"not exported: {sorted(used - exported)}"
    # A panel per series: every queue metric the server exports is on the board.
    queue_series = {
        "conveyor_queue_tasks",
        "conveyor_queue_oldest_queued_seconds",
        "conveyor_tasks_started_total",
        "conveyor_tasks_finished_total",
        "conveyor_task_run_seconds_bucket",
        "conveyor_lease_expiries_total",
        "conveyor_task_retries_total",
        "conveyor_tasks_dead_total",
        "conveyor_schedule_fires_total",
        "conveyor_queue_webhook_deliveries_total",
    }
    assert queue_series <= used


def test_a_settled_batch_counts_each_task_by_queue_and_outcome() -> None:
    """One call for a batch of two queues and three outcomes: each counter gets every
    task, under its own queue and outcome (counted per queue, added once)."""
    project = f"m-{uuid.uuid4().hex[:8]}"
    start = datetime(2026, 1, 1, tzinfo=UTC)

    def row(queue: str, state: str, seconds: float) -> TaskRow:
        empty: list[Any] = [None] * len(TASK_COLUMNS)
        task = TaskRow(*empty)
        task.project, task.queue, task.state = project, queue, state
        task.start_time, task.end_time = start, start + timedelta(seconds=seconds)
        return task

    leased = [row("a", "RUNNING", 0)] * 3 + [row("b", "RUNNING", 0)]
    reported = [
        *[row("a", "SUCCEEDED", 0.02)] * 2,
        row("a", "SCHEDULED", 0.2),
        row("b", "FAILED", 2),
        row("b", "SUCCEEDED", 20),
    ]
    metrics.count_settled(leased, reported)

    def sample(name: str, **labels: str) -> float | None:
        return REGISTRY.get_sample_value(name, {"project": project, **labels})

    assert sample("conveyor_tasks_started_total", queue="a") == 3
    assert sample("conveyor_tasks_started_total", queue="b") == 1
    finished = "conveyor_tasks_finished_total"
    assert sample(finished, queue="a", outcome="succeeded") == 2
    assert sample(finished, queue="a", outcome="retried") == 1
    assert sample(finished, queue="b", outcome="failed") == 1
    assert sample(finished, queue="b", outcome="succeeded") == 1
    assert sample("conveyor_task_retries_total", queue="a") == 1
    assert sample("conveyor_tasks_dead_total", queue="b") == 1
    assert sample("conveyor_task_run_seconds_count", queue="a") == 3
    assert sample("conveyor_task_run_seconds_bucket", queue="a", le="0.05") == 2
    assert sample("conveyor_task_run_seconds_sum", queue="b") == 22
