"""Drills on outages: PostgreSQL stopped mid-load, SIGTERM with calls and streams open,
the LISTEN connection killed."""

from __future__ import annotations

import signal
import threading
import time
import uuid
from collections import Counter
from typing import Any

import grpc
import psycopg
import pytest
from drillkit.drill import KIND, PROJECT, RETRY, Drill, Figure, Scale
from drillkit.replicas import Replica
from drillkit.waits import until
from grpc_health.v1 import health_pb2

from conveyor.v1 import (
    enums_pb2,
    event_pb2,
    event_pb2_grpc,
    task_pb2,
    task_service_pb2,
    worker_pb2,
    worker_pb2_grpc,
)
from conveyor.v1 import task_service_pb2_grpc as task_grpc

pytestmark = pytest.mark.drill

PARENT = f"projects/{PROJECT}"
KEEPALIVE = "conveyor.keepalive"


def _create_request(request_id: str) -> task_service_pb2.CreateTaskRequest:
    task = task_pb2.Task(kind=KIND, queue="default")
    task.input.struct_value.update({"request": request_id})
    task.retry_policy.max_attempts = RETRY["max_attempts"]
    task.retry_policy.backoff = enums_pb2.BACKOFF_FIXED
    task.retry_policy.initial_backoff.FromMilliseconds(200)
    return task_service_pb2.CreateTaskRequest(parent=PARENT, task=task, request_id=request_id)


def test_postgres_stopped_mid_load(drill: Drill, scale: Scale, figure: Figure) -> None:
    """PostgreSQL stopped in immediate mode for 10 s mid-load: no acknowledged create is
    lost; calls fail with UNAVAILABLE, never INTERNAL; health goes NOT_SERVING and back."""
    a = drill.replica("a")
    for _ in range(2):
        drill.worker(a, concurrency=4, work=0.01, lease_duration=2.0)
    outage = scale.pick(4.0, 10.0)
    stop = threading.Event()
    accepted: list[str] = []
    codes: Counter[str] = Counter()
    health: list[str] = []

    def create_load() -> None:
        stub = task_grpc.TaskServiceStub(drill.channel(a))
        while not stop.is_set():
            try:
                # A deadline past the outage: the code is the server's answer, not ours.
                task = stub.CreateTask(
                    _create_request(str(uuid.uuid4())), metadata=drill.metadata, timeout=60
                )
            except grpc.RpcError as error:
                codes[error.code().name] += 1
                time.sleep(0.05)
                continue
            codes["OK"] += 1
            accepted.append(task.name.rsplit("/", 1)[-1])

    def watch_health() -> None:
        check = drill.channel(a).unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        while not stop.is_set():
            try:
                status = check(health_pb2.HealthCheckRequest(), timeout=2).status
                seen = health_pb2.HealthCheckResponse.ServingStatus.Name(status)
            except grpc.RpcError as error:
                seen = error.code().name
            if not health or health[-1] != seen:
                health.append(seen)
            time.sleep(0.1)

    threads = [threading.Thread(target=create_load) for _ in range(2)]
    threads.append(threading.Thread(target=watch_health))
    for thread in threads:
        thread.start()
    try:
        until(lambda: len(accepted) >= 20, 60, f"creates before the outage {codes}")
        drill.postgres.stop_immediate()
        time.sleep(outage)
        drill.postgres.restart()
        before = len(accepted)
        until(lambda: len(accepted) >= before + 20, 120, "creates after the outage")
        until(lambda: bool(health) and health[-1] == "SERVING", 60, "health SERVING")
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    left = drill.wait_terminal(accepted, timeout=scale.pick(120, 300))
    verdict = drill.check(accepted)
    figure(
        f"{outage:.0f} s outage: {verdict.figure()}; codes {dict(codes)}; "
        f"health {' -> '.join(health)}"
    )
    assert left == 0, verdict.explain()
    assert verdict.ok, verdict.explain()
    assert set(codes) <= {"OK", "UNAVAILABLE"}, codes
    assert "NOT_SERVING" in health and health[-1] == "SERVING", health


def _db_event_ids(database_url: str) -> list[int]:
    with psycopg.connect(database_url) as conn:
        return [
            int(row[0])
            for row in conn.execute(
                "SELECT id FROM events WHERE project = %s ORDER BY id", (PROJECT,)
            )
        ]


class _Watcher:
    """One WatchEvents stream: on `first` until it ends, then resumed on `second`."""

    def __init__(self, drill: Drill, first: Replica, second: Replica) -> None:
        self.drill = drill
        self.targets = [first, second]
        self.ids: list[int] = []
        self.cursor = 0
        self.first_end = ""
        self.call: Any = None
        self.errors: list[str] = []
        self.thread = threading.Thread(target=self.run)

    def run(self) -> None:
        for index, replica in enumerate(self.targets):
            stub = event_pb2_grpc.EventServiceStub(self.drill.channel(replica))
            call = stub.WatchEvents(
                event_pb2.WatchEventsRequest(parent=PARENT, after=self.cursor),
                metadata=self.drill.metadata,
            )
            self.call = call
            code = "OK"
            try:
                for event in call:
                    # A keep-alive carries the stream's cursor and is no event of the log.
                    if event.type != KEEPALIVE:
                        self.ids.append(event.id)
                    self.cursor = event.id
            except grpc.RpcError as error:
                code = error.code().name
            if index == 0:
                self.first_end = code
            elif code != "CANCELLED":
                self.errors.append(f"second stream ended {code}")


def test_sigterm_with_calls_and_streams_open(drill: Drill, scale: Scale, figure: Figure) -> None:
    """SIGTERM on a replica with calls and streams open: exit 0 within the grace, every call
    ends OK or UNAVAILABLE, and the streams resume on the other replica with no gap."""
    grace = 5.0
    a = drill.replica("a", grace=grace)
    b = drill.replica("b")
    calls, streams = (100, 20) if scale.full else (20, 5)
    stop = threading.Event()
    polls: Counter[str] = Counter()
    callers: Counter[str] = Counter()
    odd: list[str] = []
    signalled = 0.0
    created = 0

    def note(kind: str, code: grpc.StatusCode) -> None:
        if code not in (grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE):
            after = time.monotonic() - signalled if signalled else -1.0
            odd.append(f"{kind} {code.name} {after:.2f} s after SIGTERM")

    def make_events() -> None:
        nonlocal created
        with drill.client(b) as client:
            while not stop.is_set():
                client.create_task(KIND, {}, queue="events")
                created += 1
                time.sleep(0.05)

    def long_poll() -> None:
        # A call in flight when SIGTERM arrives: a long poll on a queue nobody fills.
        stub = worker_pb2_grpc.WorkerServiceStub(drill.channel(a))
        request = worker_pb2.LeaseTasksRequest(parent=PARENT, worker="idle", queues=["idle"])
        request.wait_timeout.FromSeconds(int(grace * 2))
        try:
            stub.LeaseTasks(request, metadata=drill.metadata, timeout=grace * 4)
            polls["OK"] += 1
        except grpc.RpcError as error:
            polls[error.code().name] += 1
            note("long poll", error.code())

    def short_calls() -> None:
        # Calls arriving all through the shutdown, until the replica is gone.
        stub = task_grpc.TaskServiceStub(drill.channel(a))
        request = task_service_pb2.ListTasksRequest(parent=PARENT, page_size=1)
        while True:
            try:
                stub.ListTasks(request, metadata=drill.metadata, timeout=grace * 2)
                callers["OK"] += 1
            except grpc.RpcError as error:
                callers[error.code().name] += 1
                note("call", error.code())
                if error.code() != grpc.StatusCode.UNAVAILABLE or not a.alive():
                    return
                time.sleep(0.05)

    maker = threading.Thread(target=make_events)
    maker.start()
    watchers = [_Watcher(drill, a, b) for _ in range(streams)]
    pollers = [threading.Thread(target=long_poll) for _ in range(calls)]
    shorts = [threading.Thread(target=short_calls) for _ in range(4)]
    try:
        for thread in [*(w.thread for w in watchers), *pollers, *shorts]:
            thread.start()
        until(lambda: all(len(w.ids) > 0 for w in watchers), 60, "every stream's first event")
        time.sleep(1.0)  # the long polls are parked by now
        signalled = time.monotonic()
        a.signal(signal.SIGTERM)
        exit_code = a.wait(grace + 30)
        took = time.monotonic() - signalled
        for thread in [*pollers, *shorts]:
            thread.join(60)
        time.sleep(1.0)  # events made while the streams moved over
    finally:
        stop.set()
        maker.join()
    expected = _db_event_ids(drill.database_url)
    until(lambda: all(w.cursor >= expected[-1] for w in watchers), 60, "streams caught up")
    for watcher in watchers:
        watcher.call.cancel()
        watcher.thread.join(30)
    # `after` 0 watches from now: each stream owes every event from its first one on.
    gaps = sum(1 for w in watchers if w.ids != [i for i in expected if i >= w.ids[0]])
    first_ends = Counter(w.first_end for w in watchers)
    figure(
        f"exit {exit_code} after {took:.1f} s (grace {grace:.0f} s); {calls} long polls "
        f"ended {dict(polls)}; 4 callers' calls ended {dict(callers)}; {streams} streams "
        f"ended {dict(first_ends)} on the stopped replica, resumed with {gaps} gaps over "
        f"{len(expected)} events" + (f"; {', '.join(odd)}" if odd else "")
    )
    assert exit_code == 0
    assert took < grace + 5
    assert set(first_ends) <= {"OK", "UNAVAILABLE"}, first_ends
    assert [e for w in watchers for e in w.errors] == []
    assert gaps == 0
    assert odd == []


def test_listen_connection_killed(drill: Drill, scale: Scale, figure: Figure) -> None:
    """The LISTEN connection killed (pg_terminate_backend), again and again: tasks still
    start, within the polling backstop."""
    a = drill.replica("a")
    drill.worker(a, concurrency=2, work=0.0, lease_duration=10.0)
    count = scale.count(10, 60)
    stop = threading.Event()
    kills = 0

    def kill_listen() -> None:
        nonlocal kills
        with psycopg.connect(drill.database_url, autocommit=True) as conn:
            while not stop.is_set():
                row = conn.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE application_name = 'conveyor-listen'"
                    " AND datname = current_database()"
                ).fetchone()
                kills += int(row[0]) if row else 0
                time.sleep(0.3)

    killer = threading.Thread(target=kill_listen)
    killer.start()
    accepted: list[str] = []
    try:
        with drill.client(a) as client:
            for _ in range(count):
                task = client.create_task(KIND, {}, retry_policy=RETRY)
                accepted.append(task.name.rsplit("/", 1)[-1])
                time.sleep(0.2)
        left = drill.wait_terminal(accepted, timeout=60)
    finally:
        stop.set()
        killer.join()
    with psycopg.connect(drill.database_url) as conn:
        waits = [
            float(row[0])
            for row in conn.execute(
                "SELECT extract(epoch FROM start_time - create_time) FROM tasks WHERE project = %s",
                (PROJECT,),
            )
        ]
    verdict = drill.check(accepted)
    figure(
        f"{kills} LISTEN connections killed, {count} tasks: slowest start "
        f"{max(waits):.2f} s after create (backstop 1 s poll, 0.5 s reconnect); "
        f"{verdict.figure()}"
    )
    assert left == 0, verdict.explain()
    assert verdict.ok, verdict.explain()
    assert kills > 0
    # The backstop polls every second (0.5 s while reconnecting); 5 s is far past it.
    assert max(waits) < 5.0
