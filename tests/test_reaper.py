"""The lease reaper and the promoter: expiry by the database clock, N replicas, NOTIFY."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg.rows import TupleRow, dict_row

from conveyor.server.domain.leases import Completion, Leases, Take, TaskRef
from conveyor.server.domain.task_ids import TaskIds
from conveyor.server.errors import FailedPrecondition
from conveyor.server.loops.promoter import Promoter
from conveyor.server.loops.reaper import Reaper
from conveyor.server.store.db import Pool, open_pool

PROJECT = "default"
_ids = TaskIds()


async def insert_tasks(
    conn: psycopg.AsyncConnection[Any],
    n: int = 1,
    *,
    queue: str = "q",
    state: str = "QUEUED",
    schedule_time: datetime | None = None,
    max_attempts: int = 3,
    backoff: str = "EXPONENTIAL_JITTER",
    initial_backoff_ms: int = 1000,
) -> list[uuid.UUID]:
    """Inserts tasks the way CreateTask leaves them (test helper: no validation)."""
    ids = [_ids.next()[0] for _ in range(n)]
    await conn.execute(
        """
        INSERT INTO tasks (project, id, queue, kind, state, max_attempts, backoff,
                           initial_backoff_ms, schedule_time, root_task)
        SELECT %(project)s, id, %(queue)s, 'test.kind', %(state)s, %(max_attempts)s,
               %(backoff)s, %(initial)s, coalesce(%(schedule_time)s::timestamptz, now()), id
        FROM unnest(%(ids)s::uuid[]) AS id
        """,
        {
            "project": PROJECT,
            "queue": queue,
            "state": state,
            "max_attempts": max_attempts,
            "backoff": backoff,
            "initial": initial_backoff_ms,
            "schedule_time": schedule_time,
            "ids": ids,
        },
    )
    return ids


async def task_state(conn: psycopg.AsyncConnection[Any], task_id: uuid.UUID) -> dict[str, Any]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute("SELECT * FROM tasks WHERE id = %s", [task_id])
    row = await cur.fetchone()
    assert row is not None
    return row


async def event_types(conn: psycopg.AsyncConnection[Any], task_id: uuid.UUID) -> list[str]:
    cur = await conn.execute(
        "SELECT type FROM events WHERE subject = %s ORDER BY id",
        [f"projects/{PROJECT}/tasks/{task_id}"],
    )
    return [r[0] for r in await cur.fetchall()]


def take(worker: str = "w1", limit: int = 1, queues: tuple[str, ...] = ("q",)) -> Take:
    return Take(worker, queues, limit)


def ref(task_id: uuid.UUID) -> TaskRef:
    return TaskRef(PROJECT, task_id)


async def db_now(conn: psycopg.AsyncConnection[Any]) -> datetime:
    cur = await conn.execute("SELECT now()")
    row = await cur.fetchone()
    assert row is not None
    result: datetime = row[0]
    return result


async def attempts(conn: psycopg.AsyncConnection[Any], task_id: uuid.UUID) -> list[tuple[Any, ...]]:
    cur = await conn.execute(
        "SELECT attempt, worker, outcome FROM task_attempts WHERE task_id = %s ORDER BY attempt",
        [task_id],
    )
    return list(await cur.fetchall())


async def test_live_leases_are_left_alone(
    pool: Pool, conn: psycopg.AsyncConnection[TupleRow]
) -> None:
    await insert_tasks(conn)
    await Leases(pool).take(PROJECT, take())
    assert (await Reaper(pool).run_once()).reclaimed == 0


async def test_expired_lease_is_retried_after_backoff(
    pool: Pool, conn: psycopg.AsyncConnection[TupleRow]
) -> None:
    (task_id,) = await insert_tasks(conn, backoff="FIXED", initial_backoff_ms=5000)
    (row,) = await Leases(pool).take(PROJECT, take())
    later = await db_now(conn) + timedelta(hours=1)
    retried: list[int] = []

    reaped = await Reaper(pool, on_retry=lambda: retried.append(1)).run_once(now=later)
    assert (reaped.retried, reaped.interrupted) == (1, 0)
    assert retried == [1]
    task = await task_state(conn, task_id)
    assert task["state"] == "SCHEDULED" and task["attempt"] == 1
    assert task["schedule_time"] == later + timedelta(seconds=5)
    assert task["state_reason"] == "lease expired" and task["lease_expire_time"] is None
    assert await attempts(conn, task_id) == [(1, "w1", "LEASE_EXPIRED")]
    assert await event_types(conn, task_id) == ["task.started", "task.lost", "task.retrying"]
    assert row.lease_id == task["lease_id"]


async def test_expired_lease_without_attempts_left_is_interrupted(
    pool: Pool, conn: psycopg.AsyncConnection[TupleRow]
) -> None:
    (last,) = await insert_tasks(conn, max_attempts=1, queue="a")
    (cancelled,) = await insert_tasks(conn, max_attempts=5, queue="b")
    leases = Leases(pool)
    await leases.take(PROJECT, take(queues=("a", "b"), limit=2))
    await conn.execute(
        "UPDATE tasks SET cancel_requested = true, state_reason = 'user said stop' WHERE id = %s",
        [cancelled],
    )

    reaped = await Reaper(pool).run_once(now=await db_now(conn) + timedelta(hours=1))
    assert (reaped.retried, reaped.interrupted) == (0, 2)
    for task_id, reason in ((last, "lease expired"), (cancelled, "user said stop")):
        task = await task_state(conn, task_id)
        assert task["state"] == "INTERRUPTED" and task["end_time"] is not None
        assert task["state_reason"] == reason
        assert await event_types(conn, task_id) == [
            "task.started",
            "task.lost",
            "task.interrupted",
        ]


async def test_fencing_late_report_of_a_lost_lease_is_refused(
    pool: Pool, conn: psycopg.AsyncConnection[TupleRow]
) -> None:
    (task_id,) = await insert_tasks(conn, backoff="FIXED", initial_backoff_ms=0)
    leases = Leases(pool)
    (first,) = await leases.take(PROJECT, take("w1"))
    later = await db_now(conn) + timedelta(hours=1)
    assert (await Reaper(pool).run_once(now=later)).retried == 1
    assert await Promoter(pool).run_once(now=later) == 1
    (second,) = await leases.take(PROJECT, take("w2"))
    assert second.id == task_id and second.attempt == 2 and second.lease_id != first.lease_id
    assert first.lease_id is not None and second.lease_id is not None

    with pytest.raises(FailedPrecondition) as caught:
        await leases.complete(Completion(ref(task_id), first.lease_id, '"late"'))
    assert caught.value.reason == "LEASE_STALE"
    done = await leases.complete(Completion(ref(task_id), second.lease_id, '"fresh"'))
    assert done.result == "fresh" and done.worker == "w2"
    with pytest.raises(FailedPrecondition):
        await leases.complete(Completion(ref(task_id), first.lease_id, '"later still"'))
    assert (await task_state(conn, task_id))["result"] == "fresh"
    assert await attempts(conn, task_id) == [(1, "w1", "LEASE_EXPIRED"), (2, "w2", "SUCCEEDED")]


async def test_concurrent_reapers_reclaim_each_lease_once(
    database_url: str, pool: Pool, conn: psycopg.AsyncConnection[TupleRow]
) -> None:
    ids = await insert_tasks(conn, 300)
    await Leases(pool).take(PROJECT, take(limit=100))
    await Leases(pool).take(PROJECT, take(limit=100))
    await Leases(pool).take(PROJECT, take(limit=100))
    later = await db_now(conn) + timedelta(hours=1)
    other = await open_pool(database_url, min_size=1, max_size=2)
    try:
        # Small batches so the two passes interleave many times.
        results = await asyncio.gather(
            Reaper(pool, batch=7).run_once(now=later),
            Reaper(other, batch=7).run_once(now=later),
            Reaper(pool, batch=11).run_once(now=later),
        )
    finally:
        await other.close()
    assert sum(r.retried for r in results) == len(ids)
    cur = await conn.execute(
        "SELECT count(*) FILTER (WHERE type = 'task.lost'), count(DISTINCT subject) "
        "FROM events WHERE type = 'task.lost'"
    )
    assert await cur.fetchone() == (300, 300)
    cur = await conn.execute("SELECT count(*) FROM task_attempts WHERE outcome = 'LEASE_EXPIRED'")
    assert await cur.fetchone() == (300,)


async def test_promoter_queues_due_tasks_and_notifies(
    database_url: str, pool: Pool, conn: psycopg.AsyncConnection[TupleRow]
) -> None:
    now = await db_now(conn)
    (soon,) = await insert_tasks(conn, state="SCHEDULED", schedule_time=now + timedelta(minutes=1))
    (later,) = await insert_tasks(
        conn, state="SCHEDULED", schedule_time=now + timedelta(minutes=5), queue="other"
    )
    promoter = Promoter(pool)
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as listener:
        await listener.execute("LISTEN conveyor_tasks")
        assert await promoter.run_once() == 0
        assert await promoter.run_once(now=now + timedelta(minutes=1)) == 1
        payloads = [n.payload async for n in listener.notifies(timeout=2, stop_after=1)]
    assert payloads == [f"{PROJECT}/q"]
    assert (await task_state(conn, soon))["state"] == "QUEUED"
    assert (await task_state(conn, later))["state"] == "SCHEDULED"
    assert await event_types(conn, soon) == ["task.queued"]
    # Its schedule_time is kept: a retried task keeps its place in lease order.
    assert (await task_state(conn, soon))["schedule_time"] == now + timedelta(minutes=1)


async def test_promoter_loop_wakes_at_the_due_time(
    pool: Pool, conn: psycopg.AsyncConnection[TupleRow]
) -> None:
    promoter = Promoter(pool, interval=30.0)
    await promoter.start()
    try:
        await promoter.wait_for_pass()
        (task_id,) = await insert_tasks(
            conn, state="SCHEDULED", schedule_time=await db_now(conn) + timedelta(milliseconds=300)
        )
        promoter.poke()  # as FailTask does after scheduling a retry
        started = asyncio.get_running_loop().time()
        while (await task_state(conn, task_id))["state"] != "QUEUED":
            assert asyncio.get_running_loop().time() - started < 5
            await asyncio.sleep(0.02)
        # Promoted close to its time, long before the 30 s interval.
        assert asyncio.get_running_loop().time() - started < 1.5
    finally:
        await promoter.stop()


async def test_silent_workers_are_marked_disconnected(
    pool: Pool, conn: psycopg.AsyncConnection[TupleRow]
) -> None:
    await conn.execute(
        "INSERT INTO workers (project, id, connected, last_seen_time) VALUES "
        "(%(p)s, 'old', true, now() - interval '1 hour'), (%(p)s, 'fresh', true, now()), "
        "(%(p)s, 'gone', false, now() - interval '1 hour')",
        {"p": PROJECT},
    )
    reaped = await Reaper(pool, stale_after=30).run_once()
    assert reaped.disconnected == 1
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute("SELECT id, connected FROM workers ORDER BY id")
    assert await cur.fetchall() == [
        {"id": "fresh", "connected": True},
        {"id": "gone", "connected": False},
        {"id": "old", "connected": False},
    ]
    await cur.execute("SELECT type, subject FROM events")
    assert await cur.fetchall() == [
        {"type": "worker.disconnected", "subject": f"projects/{PROJECT}/workers/old"}
    ]


async def test_reaper_loop_runs_passes_until_stopped(
    pool: Pool, conn: psycopg.AsyncConnection[TupleRow]
) -> None:
    reaper = Reaper(pool, interval=0.05)
    await reaper.start()
    try:
        await reaper.wait_for_pass()
        await reaper.wait_for_pass()
    finally:
        await reaper.stop()
    await reaper.stop()  # idempotent


async def test_attempts_past_their_execution_timeout_end_whatever_their_lease(
    pool: Pool, conn: psycopg.AsyncConnection[TupleRow]
) -> None:
    (retried,) = await insert_tasks(conn, queue="a", backoff="FIXED", initial_backoff_ms=5000)
    (last,) = await insert_tasks(conn, queue="b", max_attempts=1)
    (cancelled,) = await insert_tasks(conn, queue="c")
    (patient,) = await insert_tasks(conn, queue="d")
    await conn.execute(
        "UPDATE tasks SET execution_timeout_ms = CASE WHEN id = %s THEN 3600000 ELSE 1000 END",
        [patient],
    )
    leases = Leases(pool)
    rows = await leases.take(PROJECT, take(queues=("a", "b", "c", "d"), limit=4))
    await conn.execute(
        "UPDATE tasks SET cancel_requested = true, state_reason = 'stop' WHERE id = %s",
        [cancelled],
    )
    # Past the 1 s timeout, well inside the 30 s leases (which stay alive).
    later = await db_now(conn) + timedelta(seconds=5)
    reaped = await Reaper(pool).run_once(now=later)
    assert (reaped.retried, reaped.interrupted, reaped.timed_out) == (1, 0, 3)

    for task_id, state, events in (
        (retried, "SCHEDULED", ["task.started", "task.retrying"]),
        (last, "FAILED", ["task.started", "task.failed"]),
        (cancelled, "INTERRUPTED", ["task.started", "task.interrupted"]),
    ):
        task = await task_state(conn, task_id)
        assert task["state"] == state and task["lease_expire_time"] is None
        assert task["error"]["type"] == "EXECUTION_TIMEOUT"
        assert await attempts(conn, task_id) == [(1, "w1", "FAILED")]
        assert await event_types(conn, task_id) == events
    assert (await task_state(conn, retried))["schedule_time"] == later + timedelta(seconds=5)
    assert (await task_state(conn, cancelled))["state_reason"] == "stop"
    assert (await task_state(conn, patient))["state"] == "RUNNING"
    # The timed-out lease is stale: its late report is refused.
    by_id = {row.id: row for row in rows}
    stale = by_id[last]
    assert stale.lease_id is not None
    with pytest.raises(FailedPrecondition):
        await leases.complete(Completion(ref(last), stale.lease_id, "1"))
