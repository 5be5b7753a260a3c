"""Drills on workers: killed with SIGKILL mid-drain, frozen past their lease."""

from __future__ import annotations

import signal
import time

import psycopg
import pytest
from drillkit.checker import count_not_terminal
from drillkit.drill import PROJECT, Drill, Figure, Scale, Setup
from drillkit.waits import until
from drillkit.workers import WorkerProcess

pytestmark = pytest.mark.drill


def test_workers_killed_every_two_seconds(
    drill: Drill, scale: Scale, setup: Setup, figure: Figure
) -> None:
    """Workers killed with SIGKILL every 2 s while the queue drains: nothing lost or doubled."""
    setup.require()
    replica = drill.replica("a", processes=setup.processes)
    period = scale.pick(1.0, 2.0)
    count = scale.count(250, 5000)
    with drill.client(replica) as client:
        accepted = drill.create_tasks(client, count)

    def start() -> WorkerProcess:
        return drill.worker(
            replica, concurrency=4, work=0.05, lease_duration=2.0, batches=setup.batches
        )

    workers = [start() for _ in range(3)]
    kills = 0
    drain_deadline = time.monotonic() + scale.pick(120, 900)
    while time.monotonic() < drain_deadline:
        time.sleep(period)
        if count_not_terminal(drill.database_url, PROJECT, accepted) == 0:
            break
        victim = kills % len(workers)
        workers[victim].kill()
        kills += 1
        workers[victim] = start()
    left = drill.wait_terminal(accepted, timeout=120)
    verdict = drill.check(accepted)
    figure(f"{count} tasks, a worker SIGKILLed every {period:.0f} s ({kills}): {verdict.figure()}")
    assert left == 0, verdict.explain()
    assert verdict.ok, verdict.explain()
    assert kills > 0
    assert verdict.succeeded == count


_ATTEMPTS = (
    "SELECT attempt, lease_id::text, outcome FROM task_attempts"
    " WHERE project = %s AND task_id = %s ORDER BY attempt"
)


def _attempts(database_url: str, task_id: str) -> list[tuple[int, str, str | None]]:
    with psycopg.connect(database_url) as conn:
        return [(row[0], row[1], row[2]) for row in conn.execute(_ATTEMPTS, (PROJECT, task_id))]


def test_frozen_worker_reports_late_and_is_refused(drill: Drill, figure: Figure) -> None:
    """A worker frozen (SIGSTOP) past its lease, then resumed: its late report is refused,
    and the result of the attempt that ran meanwhile stands."""
    replica = drill.replica("a")
    frozen = drill.worker(replica, mode="unary", work=2.0, lease_duration=1.0)
    with drill.client(replica) as client:
        [task_id] = drill.create_tasks(client, 1)
    [(_, first_lease, _)] = until(
        lambda: _attempts(drill.database_url, task_id), 60, "the first lease"
    )
    frozen.signal(signal.SIGSTOP)
    until(
        lambda: _attempts(drill.database_url, task_id)[0][2] == "LEASE_EXPIRED",
        60,
        "the frozen worker's lease to expire",
    )
    drill.worker(replica, mode="unary", work=0.01, lease_duration=10.0)
    assert drill.wait_terminal([task_id], timeout=60) == 0
    frozen.signal(signal.SIGCONT)
    late = until(lambda: [r for r in drill.reports() if r[1] == first_lease], 60, "the late report")
    attempts = _attempts(drill.database_url, task_id)
    with drill.client(replica) as client:
        task = client.get_task(task_id)
    verdict = drill.check([task_id])
    figure(f"late report {late[0][2]}; {verdict.figure()}")
    assert late == [(task_id, first_lease, "refused")]
    assert [(a[0], a[2]) for a in attempts] == [(1, "LEASE_EXPIRED"), (2, "SUCCEEDED")]
    assert task.result.struct_value.fields["lease_id"].string_value == attempts[1][1]
    assert verdict.ok, verdict.explain()
    assert verdict.reruns == 1


def test_frozen_stream_worker_reports_late_and_is_refused(
    drill: Drill, setup: Setup, figure: Figure
) -> None:
    """The same with the SDK's stream worker: frozen, its heartbeats stop and its lease
    expires; resumed, the report it sends on its stream (or, if the stream is gone, by the
    unary fallback) is refused, and the new attempt's result stands."""
    setup.require()
    replica = drill.replica("a", processes=setup.processes)
    frozen = drill.worker(
        replica, concurrency=1, work=3.0, lease_duration=1.0, batches=setup.batches
    )
    with drill.client(replica) as client:
        [task_id] = drill.create_tasks(client, 1)
    [(_, first_lease, _)] = until(
        lambda: _attempts(drill.database_url, task_id), 60, "the first lease"
    )
    frozen.signal(signal.SIGSTOP)
    until(
        lambda: _attempts(drill.database_url, task_id)[0][2] == "LEASE_EXPIRED",
        60,
        "the frozen worker's lease to expire",
    )
    drill.worker(replica, concurrency=1, work=0.01, lease_duration=10.0, batches=setup.batches)
    assert drill.wait_terminal([task_id], timeout=60) == 0
    frozen.signal(signal.SIGCONT)
    late = until(
        lambda: [r for r in drill.reports() if r[0] == task_id], 60, "the late report's refusal"
    )
    attempts = _attempts(drill.database_url, task_id)
    with drill.client(replica) as client:
        task = client.get_task(task_id)
    verdict = drill.check([task_id])
    figure(f"late report {late[0][2]}; {verdict.figure()}")
    assert late == [(task_id, "-", "refused")]
    assert [(a[0], a[2]) for a in attempts] == [(1, "LEASE_EXPIRED"), (2, "SUCCEEDED")]
    assert task.result.struct_value.fields["lease_id"].string_value == attempts[1][1]
    assert first_lease != attempts[1][1]
    assert verdict.ok, verdict.explain()
    assert verdict.reruns == 1
