"""Drills on replicas: one killed mid-drain, racing leases, one request sent to both."""

from __future__ import annotations

import threading
import time
import uuid

import psycopg
import pytest
from drillkit.checker import count_not_terminal
from drillkit.drill import KIND, PROJECT, Drill, Figure, Scale, Setup, short_setups

from conveyor.client import Client, ConveyorError

pytestmark = pytest.mark.drill

BATCH = 8
"""Tasks a batched unary worker leases per call and reports per ReportTasks."""


# The short form kills a replica of several processes too: the fault --processes changes
# most; and one behind a transaction-mode PgBouncer (its server connections outlive it).
@short_setups("batched", "processes-2", "pgbouncer")
def test_replica_killed_mid_drain_then_restarted(
    drill: Drill, scale: Scale, setup: Setup, figure: Figure
) -> None:
    """One of two replicas SIGKILLed mid-drain, then restarted: nothing lost or doubled."""
    setup.require()
    a = drill.replica("a", setup=setup)
    b = drill.replica("b", setup=setup)
    count = scale.count(400, 5000)
    with drill.client(b) as client:
        accepted = drill.create_tasks(client, count)
    for replica in (a, a, b, b):
        drill.worker(replica, concurrency=4, work=0.02, lease_duration=2.0, batches=setup.batches)
    # Mid-drain: once a quarter of the tasks ended and most are still to do.
    deadline = time.monotonic() + 300
    while count_not_terminal(drill.database_url, PROJECT, accepted) > count * 3 // 4:
        assert time.monotonic() < deadline, "the drain did not start"
        time.sleep(0.1)
    a.kill()
    left_at_kill = count_not_terminal(drill.database_url, PROJECT, accepted)
    time.sleep(1.0)
    a.start(same_ports=True)
    left = drill.wait_terminal(accepted, timeout=scale.pick(120, 600))
    verdict = drill.check(accepted)
    figure(f"{count} tasks, replica killed with {left_at_kill} left: {verdict.figure()}")
    assert left == 0, verdict.explain()
    assert verdict.ok, verdict.explain()
    assert verdict.succeeded == count


@short_setups("batched", "pgbouncer")
def test_unary_workers_race_across_two_replicas(
    drill: Drill, scale: Scale, setup: Setup, figure: Figure
) -> None:
    """Unary workers racing on ready tasks across two replicas: no task leased twice."""
    setup.require()
    a = drill.replica("a", setup=setup)
    b = drill.replica("b", setup=setup)
    count = scale.count(400, 10000)
    processes, threads = (4, 16) if scale.full else (2, 4)
    with drill.client(a) as client:
        accepted = drill.create_tasks(client, count)
    for _ in range(processes):
        # Each thread takes the replicas in turn, so half the workers race on each.
        drill.worker(
            a,
            b,
            mode="unary",
            threads=threads,
            work=0.0,
            lease_duration=60.0,
            batches=setup.batches,
            batch=BATCH if setup.batches else 1,
        )
    left = drill.wait_terminal(accepted, timeout=scale.pick(120, 900))
    verdict = drill.check(accepted)
    with psycopg.connect(drill.database_url) as conn:
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE attempt > 1), max(attempt) FROM tasks"
            " WHERE project = %s",
            (PROJECT,),
        ).fetchone()
    assert row is not None
    leased_twice = int(row[0])
    workers = processes * threads
    refused = [r for r in drill.reports() if r[2] != "ok"]
    figure(
        f"{workers} unary workers ({'ReportTasks of' if setup.batches else 'leases of'} "
        f"{BATCH if setup.batches else 1}), {count} tasks: double leases "
        f"{len(verdict.duplicated) + leased_twice}, reports refused {len(refused)}; "
        f"{verdict.figure()}"
    )
    assert left == 0, verdict.explain()
    assert verdict.ok, verdict.explain()
    assert leased_twice == 0 and verdict.reruns == 0
    assert refused == []
    assert verdict.succeeded == count


def _race(on_a: Client, on_b: Client, request_id: str, errors: list[str]) -> dict[str, str]:
    """CreateTask with one request_id on both replicas at once: {side: task name}."""
    barrier = threading.Barrier(2)
    names: dict[str, str] = {}

    def create(client: Client, side: str) -> None:
        barrier.wait()
        try:
            task = client.create_task(
                KIND, {"request": request_id}, request_id=request_id, queue="idle"
            )
            names[side] = task.name
        except ConveyorError as error:
            errors.append(f"{side}: {error.code().name} {error.details()}")

    racers = [
        threading.Thread(target=create, args=(on_a, "a")),
        threading.Thread(target=create, args=(on_b, "b")),
    ]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join()
    return names


def test_same_request_id_to_both_replicas(drill: Drill, scale: Scale, figure: Figure) -> None:
    """The same request_id sent to both replicas at once: one task each time."""
    a = drill.replica("a")
    b = drill.replica("b")
    rounds = scale.count(25, 100)
    errors: list[str] = []
    pairs: list[tuple[str, str]] = []
    with drill.client(a) as on_a, drill.client(b) as on_b:
        for _ in range(rounds):
            request_id = str(uuid.uuid4())
            names = _race(on_a, on_b, request_id, errors)
            if len(names) == 2:
                pairs.append((names["a"], names["b"]))
    with psycopg.connect(drill.database_url) as conn:
        per_request = [
            int(row[0])
            for row in conn.execute(
                "SELECT count(*) FROM tasks WHERE project = %s GROUP BY request_id", (PROJECT,)
            )
        ]
    same = sum(1 for first, second in pairs if first == second)
    doubles = sum(1 for n in per_request if n > 1)
    figure(
        f"{rounds} request_ids sent to both replicas at once: {len(per_request)} tasks, "
        f"{same} answer pairs naming one task, {doubles} doubles, {len(errors)} errors"
    )
    assert errors == []
    assert same == rounds
    assert len(per_request) == rounds and doubles == 0
