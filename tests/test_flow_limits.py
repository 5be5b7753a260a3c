"""Flow control at lease time: max_concurrency (the sequential queue), concurrency keys,
and rate limits, held across leasers on separate pools (as replicas are)."""

from __future__ import annotations

import asyncio
import itertools
import random
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
import pytest_asyncio
from psycopg.rows import TupleRow

from conveyor.server.domain import rates
from conveyor.server.domain.leases import Completion, Leases, Take, TaskRef
from conveyor.server.domain.task_ids import TaskIds
from conveyor.server.store.db import Pool, open_pool

Conn = psycopg.AsyncConnection[TupleRow]
PROJECT = "default"
_ids = TaskIds()


async def insert_tasks(conn: Conn, n: int, *, queue: str, priority: int = 5) -> list[uuid.UUID]:
    """Inserts QUEUED tasks the way CreateTask leaves them (no validation)."""
    ids = [_ids.next()[0] for _ in range(n)]
    await conn.execute(
        "INSERT INTO tasks (project, id, queue, kind, priority, state, root_task)"
        " SELECT %s, id, %s, 'test.kind', %s, 'QUEUED', id FROM unnest(%s::uuid[]) AS id",
        [PROJECT, queue, priority, ids],
    )
    return ids


@pytest_asyncio.fixture
async def pools(database_url: str) -> AsyncIterator[list[Pool]]:
    """Two pools: two replicas' worth of connections on one database."""
    made = [await open_pool(database_url, min_size=1, max_size=6) for _ in range(2)]
    try:
        yield made
    finally:
        for p in made:
            await p.close()


async def set_queue(conn: Conn, queue: str, *, max_concurrency: int = 0, rate: str = "") -> None:
    await conn.execute(
        "INSERT INTO queues (project, id, max_concurrency, rate_limit) VALUES (%s, %s, %s, %s)"
        " ON CONFLICT (project, id) DO UPDATE SET max_concurrency = EXCLUDED.max_concurrency,"
        " rate_limit = EXCLUDED.rate_limit",
        [PROJECT, queue, max_concurrency, rate],
    )


async def run_worker(
    leases: Leases, name: str, queue: str, stop: asyncio.Event, *, limit: int = 2
) -> list[uuid.UUID]:
    """Leases, holds each task briefly, completes it; returns the ids in start order."""
    done: list[uuid.UUID] = []
    while not stop.is_set():
        rows = await leases.take(PROJECT, Take(name, (queue,), limit))
        if not rows:
            await asyncio.sleep(0.005)
            continue
        for row in rows:
            done.append(row.id)
        await asyncio.sleep(random.uniform(0.001, 0.01))
        for row in rows:
            assert row.lease_id is not None
            await leases.complete(Completion(TaskRef(PROJECT, row.id), row.lease_id))
    return done


async def attempts(conn: Conn) -> list[tuple[uuid.UUID, Any, Any, str | None]]:
    cur = await conn.execute(
        "SELECT a.task_id, a.start_time, a.end_time, t.concurrency_key"
        " FROM task_attempts a JOIN tasks t ON t.project = a.project AND t.id = a.task_id"
        " ORDER BY a.start_time"
    )
    return list(await cur.fetchall())


def max_overlap(intervals: list[tuple[Any, Any]]) -> int:
    points = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    level = most = 0
    for _, step in points:  # at equal times an end (-1) sorts before a start (+1)
        level += step
        most = max(most, level)
    return most


async def until_done(conn: Conn, n: int, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        cur = await conn.execute("SELECT count(*) FROM tasks WHERE state = 'SUCCEEDED'")
        row = await cur.fetchone()
        assert row is not None
        if row[0] >= n:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("tasks did not finish in time")


# A take of one from one queue tries the queue's head alone first (conveyor_admit);
# larger takes go the general way: the rules are tested both ways.
@pytest.mark.parametrize("take", [1, 2])
async def test_sequential_queue_runs_one_at_a_time_in_order(
    pools: list[Pool], conn: Conn, take: int
) -> None:
    await set_queue(conn, "seq", max_concurrency=1)
    ids = []
    for priority in (5, 3, 5, 1, 7, 5, 3, 9, 5, 5, 2, 5):
        ids += await insert_tasks(conn, 2, queue="seq", priority=priority)
    expected = [
        r[0]
        for r in await (
            await conn.execute(
                "SELECT id FROM tasks WHERE queue = 'seq' ORDER BY priority, schedule_time, id"
            )
        ).fetchall()
    ]
    stop = asyncio.Event()
    workers = [
        asyncio.create_task(run_worker(Leases(pools[i % 2]), f"w{i}", "seq", stop, limit=take))
        for i in range(3)
    ]
    await until_done(conn, len(ids))
    stop.set()
    await asyncio.gather(*workers)
    rows = await attempts(conn)
    assert [r[0] for r in rows] == expected
    assert max_overlap([(r[1], r[2]) for r in rows]) == 1
    for before, after in itertools.pairwise(rows):
        assert before[2] <= after[1]


@pytest.mark.parametrize("take", [1, 3])
async def test_concurrency_key_limit_holds_across_leasers(
    pools: list[Pool], conn: Conn, take: int
) -> None:
    ids = await insert_tasks(conn, 40, queue="k")
    # Half share key "a" (limit 2), half have no key.
    await conn.execute(
        "UPDATE tasks SET concurrency_key = 'a', concurrency_limit = 2 WHERE id = ANY(%s)",
        [ids[::2]],
    )
    stop = asyncio.Event()
    workers = [
        asyncio.create_task(run_worker(Leases(pools[i % 2]), f"w{i}", "k", stop, limit=take))
        for i in range(4)
    ]
    await until_done(conn, len(ids))
    stop.set()
    await asyncio.gather(*workers)
    rows = await attempts(conn)
    keyed = [(r[1], r[2]) for r in rows if r[3] == "a"]
    assert len(keyed) == 20
    assert max_overlap(keyed) == 2


async def test_unlimited_tasks_pass_a_blocked_key(pools: list[Pool], conn: Conn) -> None:
    (blocked,) = await insert_tasks(conn, 1, queue="m", priority=1)
    (free,) = await insert_tasks(conn, 1, queue="m", priority=9)
    await conn.execute("UPDATE tasks SET concurrency_key = 'x' WHERE id = %s", [blocked])
    # Something already runs under key x.
    (running,) = await insert_tasks(conn, 1, queue="other")
    await conn.execute(
        "UPDATE tasks SET concurrency_key = 'x', state = 'RUNNING', lease_id = gen_random_uuid(),"
        " lease_expire_time = now() + interval '1 minute' WHERE id = %s",
        [running],
    )
    rows = await Leases(pools[0]).take(PROJECT, Take("w", ("m",), 5))
    assert [r.id for r in rows] == [free]


@pytest.mark.parametrize("take", [1, 10])
async def test_queue_rate_limit_spaces_starts(pools: list[Pool], conn: Conn, take: int) -> None:
    await set_queue(conn, "r", rate="10/s")
    await insert_tasks(conn, 100, queue="r")
    leasers = [Leases(p) for p in pools]
    started = 0
    t0 = time.monotonic()
    while time.monotonic() - t0 < 2.0:
        settled = await leasers[started % 2].settle(PROJECT, (), Take("w", ("r",), take))
        started += len(settled.leased)
        if not settled.leased:
            assert settled.retry_after is not None
            assert 0 < settled.retry_after <= 0.1 + 1e-6
            await asyncio.sleep(settled.retry_after)
    # A full bucket of two, then ten a second.
    assert 19 <= started <= 23


async def test_kind_rate_limit_per_worker(pools: list[Pool], conn: Conn) -> None:
    await insert_tasks(conn, 10, queue="kr")
    await conn.execute(
        "INSERT INTO rate_limits (project, scope, key, worker, rate)"
        " VALUES (%s, 'kind', 'test.kind', 'w1', '1/h')",
        [PROJECT],
    )
    leases = Leases(pools[0])
    first = await leases.settle(PROJECT, (), Take("w1", ("kr",), 5))
    assert len(first.leased) == 1
    second = await leases.settle(PROJECT, (), Take("w1", ("kr",), 5))
    assert second.leased == []
    assert second.retry_after is not None and second.retry_after > 3000
    # Another worker is not limited.
    other = await leases.settle(PROJECT, (), Take("w2", ("kr",), 5))
    assert len(other.leased) == 5


async def test_a_task_past_a_window_of_blocked_keys_is_leased(
    pools: list[Pool], conn: Conn
) -> None:
    """The limited path looks at a few candidates first; when a key of their own holds
    them all back, it looks further down the queue (up to store.leases.SCAN)."""
    blocked = await insert_tasks(conn, 40, queue="w", priority=1)
    (free,) = await insert_tasks(conn, 1, queue="w", priority=9)
    await conn.execute("UPDATE tasks SET concurrency_key = 'busy' WHERE id = ANY(%s)", [blocked])
    await conn.execute("UPDATE tasks SET concurrency_key = 'idle' WHERE id = %s", [free])
    # Something already runs under key busy (limit 1).
    (running,) = await insert_tasks(conn, 1, queue="elsewhere")
    await conn.execute(
        "UPDATE tasks SET concurrency_key = 'busy', state = 'RUNNING',"
        " lease_id = gen_random_uuid(), lease_expire_time = now() + interval '1 minute'"
        " WHERE id = %s",
        [running],
    )
    rows = await Leases(pools[0]).take(PROJECT, Take("w", ("w",), 1))
    assert [r.id for r in rows] == [free]


async def test_rate_grammar_in_sql(conn: Conn) -> None:
    """The lease statement parses the stored rates itself; a bucket holds a fifth of a
    second's worth of tokens, at least one."""
    cur = await conn.execute(
        "SELECT conveyor_rate_per_second(r), conveyor_rate_burst(conveyor_rate_per_second(r))"
        " FROM unnest(%s::text[]) AS r",
        [["10/s", "2/s", "120/m", "7200/h", "1000000/s"]],
    )
    assert await cur.fetchall() == [
        (10.0, 2.0),
        (2.0, 1.0),
        (2.0, 1.0),
        (2.0, 1.0),
        (1_000_000.0, 200_000.0),
    ]
    for rate in ("10/s", "120/m", "7200/h"):
        parsed = rates.parse(rate, "rate")
        assert parsed is not None and str(parsed) == rate


async def test_an_end_wakes_its_queue_only_when_its_limit_was_full(
    pools: list[Pool], conn: Conn, database_url: str
) -> None:
    """A task that ends frees a place; the leasers of its queue are woken only when the
    place was wanted (its key was at its limit), not at every end."""
    ids = await insert_tasks(conn, 4, queue="wk")
    await conn.execute(
        "UPDATE tasks SET concurrency_key = 'z', concurrency_limit = 2 WHERE id = ANY(%s)", [ids]
    )
    leases = Leases(pools[0])
    first, second = await leases.take(PROJECT, Take("w", ("wk",), 4))  # the key is full
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as listener:
        await listener.execute("LISTEN conveyor_tasks")

        async def woken() -> list[str]:
            return [
                n.payload
                async for n in listener.notifies(timeout=0.5)
                if n.channel == "conveyor_tasks"
            ]

        assert first.lease_id is not None and second.lease_id is not None
        await leases.complete(Completion(TaskRef(PROJECT, first.id), first.lease_id))
        assert await woken() == [f"{PROJECT}/wk"]
        # One place of two is taken now: the next end frees a place nobody waited for.
        await leases.complete(Completion(TaskRef(PROJECT, second.id), second.lease_id))
        assert await woken() == []


async def test_a_report_frees_its_place_for_the_lease_in_the_same_call(
    pools: list[Pool], conn: Conn
) -> None:
    """On a sequential queue, completing the running task and asking for the next in one
    settle leases the next at once: the place the report frees is not counted as taken."""
    await set_queue(conn, "seq1", max_concurrency=1)
    first_id, second_id = await insert_tasks(conn, 2, queue="seq1")
    leases = Leases(pools[0])
    (first,) = await leases.take(PROJECT, Take("w", ("seq1",), 1))
    assert first.id == first_id and first.lease_id is not None
    # While it runs the queue is full.
    assert await leases.take(PROJECT, Take("w", ("seq1",), 1)) == []
    settled = await leases.settle(
        PROJECT, [Completion(TaskRef(PROJECT, first.id), first.lease_id)], Take("w", ("seq1",), 1)
    )
    assert [r.state for r in settled.outcomes if not isinstance(r, Exception)] == ["SUCCEEDED"]
    assert [r.id for r in settled.leased] == [second_id]
    (ended, started) = await attempts(conn)
    assert ended[0] == first_id and started[0] == second_id
    assert ended[2] <= started[1]  # the next starts no earlier than the first ended


async def test_pool_connections_use_generic_plans(pools: list[Pool]) -> None:
    """The lease statement is prepared at once; left to choose, PostgreSQL re-plans it at
    every call (~1 ms) because its NULL parts make custom plans look cheaper."""
    async with pools[0].connection() as c:
        cur = await c.execute("SHOW plan_cache_mode")
        assert await cur.fetchone() == ("force_generic_plan",)


async def test_a_lease_committed_while_the_first_look_waited_is_counted(
    pools: list[Pool], conn: Conn, database_url: str
) -> None:
    """The limited lease reads before it locks, then checks that nothing committed in
    between. Another leaser that held the key's lock and leased under it while this one
    read is seen: the key (limit 1) is full, so nothing more starts."""
    first_id, second_id = await insert_tasks(conn, 2, queue="race")
    await conn.execute(
        "UPDATE tasks SET concurrency_key = 'r', concurrency_limit = 1 WHERE id = ANY(%s)",
        [[first_id, second_id]],
    )
    async with await psycopg.AsyncConnection.connect(database_url) as other:
        # Another leaser holds the key's lock and leases a task under it (the second: the
        # first, still QUEUED in what this lease read, is the one it would take).
        await other.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", [f"conveyor/key/{PROJECT}/r"]
        )
        await other.execute(
            "UPDATE tasks SET state = 'RUNNING', attempt = 1, lease_id = gen_random_uuid(),"
            " lease_expire_time = now() + interval '1 minute', start_time = now(), worker = 'o'"
            " WHERE id = %s",
            [second_id],
        )
        lease = asyncio.create_task(Leases(pools[0]).take(PROJECT, Take("w", ("race",), 1)))
        # Until this lease waits for the key's lock, having read the key as empty.
        deadline = time.monotonic() + 10
        while True:
            cur = await conn.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            )
            row = await cur.fetchone()
            if row is not None and row[0] > 0:
                break
            assert time.monotonic() < deadline, "the lease never waited for the key's lock"
            await asyncio.sleep(0.01)
        await other.commit()
        assert await lease == []
    cur = await conn.execute("SELECT state FROM tasks WHERE id = %s", [first_id])
    assert await cur.fetchone() == ("QUEUED",)


async def test_an_end_whose_place_the_same_call_takes_again_wakes_no_one(
    pools: list[Pool], conn: Conn, database_url: str
) -> None:
    """A worker completing a task and taking the next of the same key in one call leaves
    the key as full as it was: the other leasers are not woken for a place that is gone."""
    ids = await insert_tasks(conn, 4, queue="wk2")
    await conn.execute(
        "UPDATE tasks SET concurrency_key = 'z2', concurrency_limit = 2 WHERE id = ANY(%s)", [ids]
    )
    leases = Leases(pools[0])
    first, _second = await leases.take(PROJECT, Take("w", ("wk2",), 4))  # the key is full
    assert first.lease_id is not None
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as listener:
        await listener.execute("LISTEN conveyor_tasks")
        settled = await leases.settle(
            PROJECT,
            [Completion(TaskRef(PROJECT, first.id), first.lease_id)],
            Take("w", ("wk2",), 1),
        )
        assert [r.id for r in settled.leased] == [ids[2]]
        woken = [
            n.payload async for n in listener.notifies(timeout=0.5) if n.channel == "conveyor_tasks"
        ]
        assert woken == []
