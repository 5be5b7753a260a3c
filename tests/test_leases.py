"""Leases against a real database: order, fencing, retries and backoff, pause, heartbeats."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg.rows import TupleRow

from conveyor.server.domain.leases import (
    Completion,
    Failure,
    Heartbeat,
    Leases,
    Take,
    TaskRef,
    task_ref,
)
from conveyor.server.domain.task_ids import TaskIds
from conveyor.server.errors import FailedPrecondition, InvalidArgument, NotFound
from conveyor.server.store import leases as lease_store
from conveyor.server.store.db import Pool

PROJECT = "default"
_ids = TaskIds()


async def insert_tasks(
    conn: psycopg.AsyncConnection[Any],
    n: int = 1,
    *,
    queue: str = "q",
    priority: int = 5,
    schedule_time: datetime | None = None,
    state: str = "QUEUED",
    max_attempts: int = 3,
    backoff: str = "EXPONENTIAL_JITTER",
    initial_backoff_ms: int = 1000,
    max_backoff_ms: int = 3_600_000,
    lease_duration_ms: int = 30_000,
    project: str = PROJECT,
) -> list[uuid.UUID]:
    """Inserts tasks the way CreateTask leaves them (test helper: no validation)."""
    ids = [_ids.next()[0] for _ in range(n)]
    await conn.execute(
        """
        INSERT INTO tasks (project, id, queue, kind, input, priority, state, max_attempts,
                           backoff, initial_backoff_ms, max_backoff_ms, schedule_time,
                           lease_duration_ms, root_task)
        SELECT %(project)s, id, %(queue)s, 'test.kind', '{"n": 1}', %(priority)s, %(state)s,
               %(max_attempts)s, %(backoff)s, %(initial)s, %(max)s,
               coalesce(%(schedule_time)s::timestamptz, now()), %(lease_ms)s, id
        FROM unnest(%(ids)s::uuid[]) AS id
        """,
        {
            "project": project,
            "queue": queue,
            "priority": priority,
            "state": state,
            "max_attempts": max_attempts,
            "backoff": backoff,
            "initial": initial_backoff_ms,
            "max": max_backoff_ms,
            "schedule_time": schedule_time,
            "lease_ms": lease_duration_ms,
            "ids": ids,
        },
    )
    return ids


async def task_state(conn: psycopg.AsyncConnection[Any], task_id: uuid.UUID) -> dict[str, Any]:
    cur = conn.cursor(row_factory=psycopg.rows.dict_row)
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


# The backoff formula (one SQL function, shared by FailTask and the reaper).


@pytest.mark.parametrize(
    ("backoff", "attempt", "rand", "expected"),
    [
        ("FIXED", 1, 0.7, 1000),
        ("FIXED", 9, 0.7, 1000),
        ("LINEAR", 1, 0.7, 1000),
        ("LINEAR", 3, 0.7, 3000),
        ("LINEAR", 50, 0.7, 10_000),  # capped at max
        ("EXPONENTIAL_JITTER", 1, 0.0, 0),
        ("EXPONENTIAL_JITTER", 1, 0.5, 500),
        ("EXPONENTIAL_JITTER", 1, 0.999999, 1000),  # the bound is inclusive
        ("EXPONENTIAL_JITTER", 3, 0.999999, 4000),
        ("EXPONENTIAL_JITTER", 3, 0.5, 2000),
        ("EXPONENTIAL_JITTER", 10, 0.999999, 10_000),  # capped at max
        ("EXPONENTIAL_JITTER", 10_000, 0.999999, 10_000),  # no overflow
    ],
)
async def test_backoff_formula(
    db_conn: psycopg.AsyncConnection[TupleRow],
    backoff: str,
    attempt: int,
    rand: float,
    expected: int,
) -> None:
    cur = await db_conn.execute(
        "SELECT conveyor_backoff_ms(%s, %s, 1000, 10000, %s)", [backoff, attempt, rand]
    )
    assert (await cur.fetchone()) == (expected,)


async def test_exponential_jitter_stays_within_bounds(
    db_conn: psycopg.AsyncConnection[TupleRow],
) -> None:
    cur = await db_conn.execute(
        """
        SELECT a, min(d), max(d) FROM generate_series(1, 6) a,
             LATERAL (SELECT conveyor_backoff_ms('EXPONENTIAL_JITTER', a, 100, 2000, random()) d
                      FROM generate_series(1, 300)) s
        GROUP BY a ORDER BY a
        """
    )
    for attempt, low, high in await cur.fetchall():
        cap = min(2000, 100 * 2 ** (attempt - 1))
        assert low >= 0 and high <= cap
        assert high > cap / 2  # jitter spreads over the range, not a constant


# Leasing.


async def test_lease_order_is_priority_then_schedule_time_then_id(
    pool: Pool, conn: psycopg.AsyncConnection[TupleRow]
) -> None:
    base = datetime.now().astimezone() - timedelta(minutes=10)
    late_low = await insert_tasks(conn, priority=7, schedule_time=base)
    (b,) = await insert_tasks(conn, priority=5, schedule_time=base + timedelta(seconds=2))
    (a1, a2) = await insert_tasks(conn, 2, priority=5, schedule_time=base + timedelta(seconds=1))
    (urgent,) = await insert_tasks(conn, priority=1, schedule_time=base + timedelta(seconds=5))
    leases = Leases(pool)

    order = [row.id for _ in range(5) for row in await leases.take(PROJECT, take())]
    assert order == [urgent, a1, a2, b, *late_low]
    assert await leases.take(PROJECT, take()) == []


async def test_settle_reads_rows_with_one_maker_per_statement(
    pool: Pool, conn: psycopg.AsyncConnection[TupleRow]
) -> None:
    """Turning a cursor's description into a row maker cost ~50 us a call: the settle
    statement's is made once and its rows still come out right."""
    ids = await insert_tasks(conn, 3)
    lease_store._MAKERS.clear()
    leases = Leases(pool)
    rows = [row for _ in range(3) for row in await leases.take(PROJECT, take())]
    assert [r.id for r in rows] == ids
    assert all(r.state == "RUNNING" and r.worker == "w1" and r.attempt == 1 for r in rows)
    assert len(lease_store._MAKERS) == 1


async def test_lease_batch_sets_lease_attempt_and_events(
    pool: Pool, conn: psycopg.AsyncConnection[TupleRow]
) -> None:
    ids = await insert_tasks(conn, 3, lease_duration_ms=45_000)
    other_queue = await insert_tasks(conn, 1, queue="other")
    rows = await Leases(pool).take(PROJECT, take("w9", limit=10))

    assert [r.id for r in rows] == ids
    for row in rows:
        assert row.state == "RUNNING" and row.attempt == 1 and row.worker == "w9"
        assert row.lease_id is not None and row.lease_expire_time is not None
        assert row.start_time is not None
        lease = (row.lease_expire_time - row.start_time).total_seconds()
        assert lease == pytest.approx(45, abs=0.01)
        assert await event_types(conn, row.id) == ["task.started"]
    assert len({r.lease_id for r in rows}) == 3
    cur = await conn.execute(
        "SELECT task_id, attempt, worker, lease_id, outcome FROM task_attempts ORDER BY task_id"
    )
    assert await cur.fetchall() == [(r.id, 1, "w9", r.lease_id, None) for r in rows]
    assert (await task_state(conn, other_queue[0]))["state"] == "QUEUED"


async def test_lease_duration_of_the_request_wins(
    pool: Pool, conn: psycopg.AsyncConnection[TupleRow]
) -> None:
    await insert_tasks(conn, lease_duration_ms=45_000)
    (row,) = await Leases(pool).take(PROJECT, Take("w", ("q",), 1, lease_ms=5_000))
    assert row.lease_expire_time is not None and row.start_time is not None
    assert (row.lease_expire_time - row.start_time).total_seconds() == pytest.approx(5, abs=0.01)


async def test_paused_queue_leases_nothing(
    pool: Pool, conn: psycopg.AsyncConnection[TupleRow]
) -> None:
    await conn.execute("INSERT INTO queues (project, id, paused) VALUES (%s, 'q', true)", [PROJECT])
    await insert_tasks(conn, 2)
    (ready,) = await insert_tasks(conn, 1, queue="open")
    leases = Leases(pool)

    rows = await leases.take(PROJECT, take(limit=10, queues=("q", "open")))
    assert [r.id for r in rows] == [ready]
    await conn.execute("UPDATE queues SET paused = false WHERE id = 'q'")
    assert len(await leases.take(PROJECT, take(limit=10))) == 2


async def test_lease_skips_other_projects_and_states(
    pool: Pool, conn: psycopg.AsyncConnection[TupleRow]
) -> None:
    await conn.execute("INSERT INTO projects (id, webhook_secret) VALUES ('other', 's')")
    await insert_tasks(conn, project="other")
    await insert_tasks(conn, state="SCHEDULED")
    await insert_tasks(conn, state="AWAITING_APPROVAL")
    assert await Leases(pool).take(PROJECT, take(limit=10)) == []


# Reports.


async def test_complete_succeeds_with_result_summary_and_token(
    pool: Pool, conn: psycopg.AsyncConnection[TupleRow]
) -> None:
    await insert_tasks(conn)
    leases = Leases(pool)
    (row,) = await leases.take(PROJECT, take())
    assert row.lease_id is not None

    done = await leases.complete(
        Completion(ref(row.id), row.lease_id, '{"ok": [1, 2]}', "all good", "resume-here")
    )
    assert done.state == "SUCCEEDED" and done.end_time is not None
    assert done.result == {"ok": [1, 2]} and done.summary == "all good"
    assert done.resume_token == "resume-here"
    assert done.lease_expire_time is None
    assert await event_types(conn, row.id) == ["task.started", "task.succeeded"]
    cur = await conn.execute("SELECT outcome, end_time IS NOT NULL FROM task_attempts")
    assert await cur.fetchall() == [("SUCCEEDED", True)]

    # The very same report again (its answer was lost): answered, not applied twice.
    again = await leases.complete(Completion(ref(row.id), row.lease_id, '"other"'))
    assert again.result == {"ok": [1, 2]}
    assert await event_types(conn, row.id) == ["task.started", "task.succeeded"]


async def test_complete_without_resume_token_keeps_the_old_one(
    pool: Pool, conn: psycopg.AsyncConnection[TupleRow]
) -> None:
    (task_id,) = await insert_tasks(conn)
    await conn.execute("UPDATE tasks SET resume_token = 'old' WHERE id = %s", [task_id])
    leases = Leases(pool)
    (row,) = await leases.take(PROJECT, take())
    assert row.lease_id is not None
    done = await leases.complete(Completion(ref(row.id), row.lease_id))
    assert done.resume_token == "old" and done.result is None


async def test_stale_or_wrong_lease_is_refused_and_changes_nothing(
    pool: Pool, conn: psycopg.AsyncConnection[TupleRow]
) -> None:
    await insert_tasks(conn)
    leases = Leases(pool)
    (row,) = await leases.take(PROJECT, take())
    before = await task_state(conn, row.id)

    wrong = uuid.uuid4()
    for report in (
        Completion(ref(row.id), wrong, '"x"'),
        Failure(ref(row.id), wrong, {"message": "boom"}, retryable=True),
    ):
        with pytest.raises(FailedPrecondition) as caught:
            await (
                leases.complete(report) if isinstance(report, Completion) else leases.fail(report)
            )
        assert caught.value.reason == "LEASE_STALE"
        assert caught.value.violations[0].type == "LEASE"
        assert caught.value.violations[0].subject == f"projects/{PROJECT}/tasks/{row.id}"
    with pytest.raises(FailedPrecondition):
        await leases.extend_one(Heartbeat(ref(row.id), wrong))
    assert await task_state(conn, row.id) == before
    assert await event_types(conn, row.id) == ["task.started"]


async def test_unknown_task_is_not_found(pool: Pool) -> None:
    leases = Leases(pool)
    with pytest.raises(NotFound):
        await leases.complete(Completion(ref(uuid.uuid4()), uuid.uuid4()))
    with pytest.raises(NotFound):
        await leases.extend_one(Heartbeat(ref(uuid.uuid4()), uuid.uuid4()))


@pytest.mark.parametrize(
    ("backoff", "rand", "delays"),
    [
        # attempt 1 fails -> delay for attempt 1; attempt 2 fails -> for attempt 2.
        ("FIXED", 0.9, [2.0, 2.0]),
        ("LINEAR", 0.9, [2.0, 4.0]),
        ("EXPONENTIAL_JITTER", 0.5, [1.0, 2.0]),
        ("EXPONENTIAL_JITTER", 0.0, [0.0, 0.0]),
    ],
)
async def test_retry_timing_follows_the_policy(
    pool: Pool,
    conn: psycopg.AsyncConnection[TupleRow],
    backoff: str,
    rand: float,
    delays: list[float],
) -> None:
    (task_id,) = await insert_tasks(
        conn, max_attempts=3, backoff=backoff, initial_backoff_ms=2000, max_backoff_ms=60_000
    )
    retried: list[int] = []
    leases = Leases(pool, rand=lambda: rand, on_retry=lambda: retried.append(1))
    for attempt, delay in enumerate(delays, start=1):
        (row,) = await leases.take(PROJECT, take())
        assert row.attempt == attempt and row.lease_id is not None
        failed = await leases.fail(
            Failure(ref(task_id), row.lease_id, {"type": "E", "message": "boom"}, True)
        )
        assert failed.state == "SCHEDULED" and failed.end_time is None
        assert failed.error == {"type": "E", "message": "boom"}
        assert failed.update_time is not None
        waited = (failed.schedule_time - failed.update_time).total_seconds()
        assert waited == pytest.approx(delay, abs=0.002)
        # Due at once for the test: make it ready again.
        await conn.execute(
            "UPDATE tasks SET state = 'QUEUED', schedule_time = now() WHERE id = %s", [task_id]
        )
    assert retried == [1, 1]
    assert await event_types(conn, task_id) == [
        "task.started",
        "task.retrying",
        "task.started",
        "task.retrying",
    ]


async def test_attempts_exhausted_or_not_retryable_ends_failed(
    pool: Pool, conn: psycopg.AsyncConnection[TupleRow]
) -> None:
    (exhausted,) = await insert_tasks(conn, max_attempts=1, queue="a")
    (fatal,) = await insert_tasks(conn, max_attempts=5, queue="b")
    leases = Leases(pool)
    (a,) = await leases.take(PROJECT, take(queues=("a",)))
    (b,) = await leases.take(PROJECT, take(queues=("b",)))
    assert a.lease_id is not None and b.lease_id is not None

    ended_a = await leases.fail(Failure(ref(exhausted), a.lease_id, {"message": "x"}, True))
    ended_b = await leases.fail(Failure(ref(fatal), b.lease_id, {"message": "x"}, False))
    for ended in (ended_a, ended_b):
        assert ended.state == "FAILED" and ended.end_time is not None
        assert await event_types(conn, ended.id) == ["task.started", "task.failed"]
    cur = await conn.execute("SELECT outcome, error->>'message' FROM task_attempts")
    assert await cur.fetchall() == [("FAILED", "x"), ("FAILED", "x")]


async def test_cancel_requested_fail_interrupts_but_complete_succeeds(
    pool: Pool, conn: psycopg.AsyncConnection[TupleRow]
) -> None:
    await insert_tasks(conn, 2)
    leases = Leases(pool)
    a, b = await leases.take(PROJECT, take(limit=2))
    assert a.lease_id is not None and b.lease_id is not None
    await conn.execute("UPDATE tasks SET cancel_requested = true")

    beat = await leases.extend_one(Heartbeat(ref(a.id), a.lease_id))
    assert beat.cancel_requested
    interrupted = await leases.fail(Failure(ref(a.id), a.lease_id, {"message": "stop"}, True))
    assert interrupted.state == "INTERRUPTED"
    assert await event_types(conn, a.id) == ["task.started", "task.interrupted"]
    done = await leases.complete(Completion(ref(b.id), b.lease_id, "1"))
    assert done.state == "SUCCEEDED"


async def test_extend_moves_the_deadline_and_keeps_progress(
    pool: Pool, conn: psycopg.AsyncConnection[TupleRow]
) -> None:
    await insert_tasks(conn)
    leases = Leases(pool)
    (row,) = await leases.take(PROJECT, take())
    assert row.lease_id is not None and row.lease_expire_time is not None
    extension = await leases.extend_one(
        Heartbeat(ref(row.id), row.lease_id, lease_ms=600_000, progress={"step": 3})
    )
    assert not extension.cancel_requested
    assert extension.lease_expire_time - row.lease_expire_time > timedelta(minutes=9)
    cur = await conn.execute("SELECT progress FROM task_attempts")
    assert await cur.fetchall() == [({"step": 3},)]
    # Heartbeats are not stored; a reported progress is, as one `task.progress` event.
    assert await event_types(conn, row.id) == ["task.started", "task.progress"]
    await leases.extend_one(Heartbeat(ref(row.id), row.lease_id))
    assert await event_types(conn, row.id) == ["task.started", "task.progress"]


async def test_progress_events_are_coalesced_to_one_a_second(
    pool: Pool, conn: psycopg.AsyncConnection[TupleRow]
) -> None:
    await insert_tasks(conn)
    leases = Leases(pool)
    (row,) = await leases.take(PROJECT, take())
    assert row.lease_id is not None
    beat = Heartbeat(ref(row.id), row.lease_id, progress={"step": 1})

    async def last_event_ago(seconds: float) -> None:
        await conn.execute(
            "UPDATE tasks SET progress_event_time = now() - %s * interval '1 second'",
            (seconds,),
        )

    await last_event_ago(0.5)  # an event went out half a second ago: this one is held
    await leases.extend_one(beat)
    assert await event_types(conn, row.id) == ["task.started"]
    cur = await conn.execute("SELECT progress, progress_time IS NOT NULL FROM tasks")
    assert await cur.fetchall() == [({"step": 1}, True)]  # the task still has the latest
    await last_event_ago(1)  # a second has passed: the next report is an event
    await leases.extend_one(Heartbeat(ref(row.id), row.lease_id, progress={"step": 2}))
    assert await event_types(conn, row.id) == ["task.started", "task.progress"]


async def test_settle_completes_many_and_leases_the_next_in_one_call(
    pool: Pool, conn: psycopg.AsyncConnection[TupleRow]
) -> None:
    await insert_tasks(conn, 5)
    leases = Leases(pool)
    first = await leases.take(PROJECT, take(limit=3))
    reports = [Completion(ref(r.id), r.lease_id, str(i)) for i, r in enumerate(first)]  # type: ignore[arg-type]
    reports.append(Completion(ref(uuid.uuid4()), uuid.uuid4()))
    settled = await leases.settle(PROJECT, reports, take(limit=3))

    assert [getattr(o, "state", None) for o in settled.outcomes[:3]] == ["SUCCEEDED"] * 3
    assert isinstance(settled.outcomes[3], NotFound)
    assert len(settled.leased) == 2 and all(r.state == "RUNNING" for r in settled.leased)


def test_task_names_are_checked() -> None:
    assert task_ref(f"projects/p/tasks/{uuid.UUID(int=1)}", "name").project == "p"
    for bad in ("", "projects/p/tasks/x", "projects/P/tasks/" + str(uuid.uuid4()), "tasks/1"):
        with pytest.raises(InvalidArgument):
            task_ref(bad, "name")
