"""Flow control end to end: real servers (two replicas on one database) and real SDK
workers, checked against what the database recorded (task_attempts start and end).

- a sequential queue (max_concurrency 1, set through UpdateQueue) served by 3 workers
  on 2 replicas never runs two tasks at once and runs them in priority, then
  schedule_time, order;
- a concurrency_key with concurrency_limit 2 holds across 2 replicas, and is reached;
- a queue rate_limit of "10/s" gives 10 +- 1 starts in each second of 5 (two workers);
- two leasers on one token bucket: the one that waited for the bucket's lock does not
  move its refill time back (which handed out tokens twice).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import psycopg

from conveyor.client import AsyncClient, TaskContext, TaskSpec, Worker
from conveyor.server.app import ConveyorServer
from conveyor.server.domain.leases import Leases, Take
from conveyor.server.store.db import open_pool

PROJECT = "alpha"
Handler = Callable[[TaskContext], Awaitable[Any]]


@dataclass
class InFlight:
    """Handlers running right now across every worker of the test (one event loop)."""

    now: int = 0
    most: int = 0
    started: list[float] = field(default_factory=list)

    @contextlib.contextmanager
    def running(self) -> Any:
        self.now += 1
        self.most = max(self.most, self.now)
        self.started.append(time.monotonic())
        try:
            yield
        finally:
            self.now -= 1


@contextlib.asynccontextmanager
async def workers(
    targets: Sequence[str],
    key: str,
    queue: str,
    handlers: Mapping[str, Handler],
    *,
    concurrency: int,
    prefix: str = "w",
) -> AsyncIterator[list[Worker]]:
    """One SDK worker per target (workers `w0`, `w1`, ...), running for the block."""
    async with contextlib.AsyncExitStack() as stack:
        made: list[Worker] = []
        for i, target in enumerate(targets):
            client = await stack.enter_async_context(
                AsyncClient(target, api_key=key, project=PROJECT)
            )
            worker = Worker(
                client, queues=[queue], concurrency=concurrency, worker_id=f"{prefix}{i}"
            )
            for kind, handler in handlers.items():
                worker.task(kind)(handler)
            made.append(worker)
        runs = [asyncio.create_task(w.arun()) for w in made]
        try:
            yield made
        finally:
            await asyncio.wait_for(asyncio.gather(*(w.stop(5) for w in made)), 20)
            await asyncio.gather(*runs)


async def until(predicate: Callable[[], Awaitable[bool]], within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while not await predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


@dataclass(frozen=True)
class Attempt:
    task: str
    worker: str
    start: datetime
    end: datetime | None
    outcome: str | None
    concurrency_key: str | None


async def attempts(database_url: str, queue: str) -> list[Attempt]:
    """The queue's attempts in start order."""
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT 'projects/' || a.project || '/tasks/' || a.task_id, a.worker,"
            " a.start_time, a.end_time, a.outcome, t.concurrency_key"
            " FROM task_attempts a JOIN tasks t ON t.project = a.project AND t.id = a.task_id"
            " WHERE a.project = %s AND t.queue = %s ORDER BY a.start_time, a.task_id",
            [PROJECT, queue],
        )
        return [Attempt(*row) for row in await cur.fetchall()]


async def count_succeeded(database_url: str, queue: str) -> int:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT count(*) FROM tasks WHERE project = %s AND queue = %s AND state = 'SUCCEEDED'",
            [PROJECT, queue],
        )
        row = await cur.fetchone()
        assert row is not None
        return int(row[0])


def max_overlap(intervals: Sequence[tuple[datetime, datetime]]) -> int:
    """Most intervals open at one instant (an end and a start at the same instant do not
    overlap)."""
    points = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    level = most = 0
    for _, step in points:  # at equal times an end (-1) sorts before a start (+1)
        level += step
        most = max(most, level)
    return most


def ended(rows: Sequence[Attempt]) -> list[tuple[datetime, datetime]]:
    out = []
    for r in rows:
        assert r.end is not None and r.outcome == "SUCCEEDED", r
        out.append((r.start, r.end))
    return out


async def test_sequential_queue_on_three_workers_runs_one_at_a_time_in_order(
    server: ConveyorServer, replica: ConveyorServer, keys: dict[str, str], database_url: str
) -> None:
    queue = "seq"
    # (priority, age in seconds of schedule_time): lease order is priority, then
    # schedule_time (oldest first), then id. Ages make the time order differ from the
    # creation (id) order within a priority.
    specs = [(5, 1), (3, 2), (5, 4), (1, 1), (7, 3), (5, 3), (3, 9), (9, 1), (5, 2), (2, 5)]
    specs += [(5, 7), (1, 6), (4, 1), (8, 2), (5, 6), (3, 5), (1, 3), (6, 1), (5, 5), (2, 2)]
    assert len(set(specs)) == len(specs)  # no ties: the order is fully determined
    base = datetime.now().astimezone() - timedelta(seconds=1)
    in_flight = InFlight()

    async def step(ctx: TaskContext) -> int:
        with in_flight.running():
            await asyncio.sleep(0.02)
        return int(ctx.input["i"])

    async with AsyncClient(server.grpc_target, api_key=keys["operator"], project=PROJECT) as ops:
        updated = await ops.update_queue(queue, max_concurrency=1)
        assert updated.max_concurrency == 1
        created = await ops.batch_create_tasks(
            [
                {
                    "kind": "seq.step",
                    "queue": queue,
                    "input": {"i": i},
                    "priority": priority,
                    "schedule_time": base - timedelta(seconds=age),
                }
                for i, (priority, age) in enumerate(specs)
            ]
        )
        names = [r.task.name for r in created.results]
        assert len(names) == len(specs) and all(names)
        expected = [
            names[i] for i in sorted(range(len(specs)), key=lambda i: (specs[i][0], -specs[i][1]))
        ]
        # Three workers, two on one replica and one on the other, each asking for more
        # than one task at a time. (The worker that completes a task usually leases the
        # next one in the same round trip, so which worker runs what is not asserted; the
        # others are woken at every completion and contend for the queue's lock.)
        targets = [server.grpc_target, replica.grpc_target, server.grpc_target]
        async with workers(targets, keys["worker"], queue, {"seq.step": step}, concurrency=3):
            await until(lambda: _all_succeeded(database_url, queue, len(specs)))

    rows = await attempts(database_url, queue)
    assert [r.task for r in rows] == expected
    assert max_overlap(ended(rows)) == 1
    for before, after in itertools.pairwise(rows):
        assert before.end is not None and before.end <= after.start
    assert in_flight.most == 1


async def _all_succeeded(database_url: str, queue: str, n: int) -> bool:
    return await count_succeeded(database_url, queue) >= n


async def test_concurrency_key_limit_of_two_holds_across_two_replicas(
    server: ConveyorServer, replica: ConveyorServer, keys: dict[str, str], database_url: str
) -> None:
    """Replica A's workers take the key's two places and hold them while replica B's
    workers lease beside them; then A stops and B takes the key's other tasks. (A worker
    that completes a task may lease the place it frees in the same statement, so without
    the hand-over every keyed task could stay with the first two holders.)"""
    queue = "keyed"
    keyed, free = InFlight(), InFlight()
    gate = asyncio.Event()

    async def held(ctx: TaskContext) -> None:
        with keyed.running():
            await gate.wait()

    async def limited(ctx: TaskContext) -> None:
        with keyed.running():
            await asyncio.sleep(0.05)

    async def unlimited(ctx: TaskContext) -> None:
        with free.running():
            await asyncio.sleep(0.05)

    async with AsyncClient(server.grpc_target, api_key=keys["operator"], project=PROJECT) as ops:
        # Keyed and unkeyed tasks interleaved in lease order.
        specs: list[TaskSpec] = []
        for i in range(20):
            specs.append(
                {
                    "kind": "key.limited",
                    "queue": queue,
                    "input": {"i": i},
                    "concurrency_key": "tenant-a",
                    "concurrency_limit": 2,
                }
            )
            specs.append({"kind": "key.free", "queue": queue, "input": {"i": i}})
        created = await ops.batch_create_tasks(specs)
        assert all(r.task.name for r in created.results)
        # Two workers on each replica, three slots each: room for far more than two.
        a_handlers = {"key.limited": held, "key.free": unlimited}
        b_handlers = {"key.limited": limited, "key.free": unlimited}
        async with workers(
            [server.grpc_target] * 2, keys["worker"], queue, a_handlers, concurrency=3, prefix="a"
        ) as a_workers:
            await until(lambda: _now(keyed, 2))
            async with workers(
                [replica.grpc_target] * 2,
                keys["worker"],
                queue,
                b_handlers,
                concurrency=3,
                prefix="b",
            ):
                # B runs the unkeyed tasks while A holds the key's two places.
                await until(lambda: _all_succeeded(database_url, queue, 10))
                assert keyed.most == 2
                stopping = asyncio.gather(*(w.stop(5) for w in a_workers))
                gate.set()
                await stopping
                await until(lambda: _all_succeeded(database_url, queue, len(specs)))

    rows = await attempts(database_url, queue)
    assert len(rows) == len(specs)
    held_rows = [r for r in rows if r.concurrency_key == "tenant-a"]
    assert len(held_rows) == 20
    # Never more than two, and two did run together (the limit, not luck, held it).
    assert max_overlap(ended(held_rows)) == 2
    assert keyed.most == 2
    # The key held back only its own tasks: the others ran beside them, more than two at
    # a time.
    assert max_overlap(ended(rows)) > 2
    # Keyed tasks were leased through both replicas.
    by_replica = {r.worker[0] for r in held_rows}
    assert by_replica == {"a", "b"}, [r.worker for r in held_rows]


async def _now(in_flight: InFlight, n: int) -> bool:
    return in_flight.now >= n


RATE_WINDOWS = 5
BURST_10 = 2
"""Tokens a "10/s" bucket holds: conveyor_rate_burst(10) (tested in test_flow_limits)."""
RATE_ATTEMPTS = 3


async def test_queue_rate_limit_of_ten_a_second_gives_ten_starts_each_second(
    server: ConveyorServer, keys: dict[str, str], database_url: str
) -> None:
    # The bucket banks 0.2 s of tokens (below); on a shared 2-core machine the servers'
    # process or the database can be starved for longer than that (seen: one lease call
    # taking 0.6 s while other suites kept both cores busy), which costs starts
    # the limiter itself never withholds. So a run may be repeated, on a fresh queue, up
    # to RATE_ATTEMPTS times. A limiter that is wrong fails every attempt: without the
    # retry timer fixed along with this test, every run gave seconds like [5, 5, 6, 7, 8].
    seen: list[str] = []
    for attempt in range(RATE_ATTEMPTS):
        counts, detail = await rate_run(server, keys, database_url, f"rated-{attempt}")
        print(f"starts per second from the first start: {counts}")
        if rate_holds(counts):
            return
        seen.append(detail)
    raise AssertionError("no run gave 10 +- 1 starts a second:\n" + "\n".join(seen))


def rate_holds(counts: list[int]) -> bool:
    """Whether the starts per second (from the first start) are what a 10/s limit gives.

    A "10/s" bucket holds conveyor_rate_burst(10) = 2 tokens and refills one every 0.1 s. From the
    second second on, each second gets the tokens that arrive in it: 10. A look that comes
    late leaves a token waiting in the bucket (up to 2: 0.2 s of lateness is absorbed),
    which moves a start across a boundary: 9 and 11 around it. So the issue's 10 +- 1
    holds for every full second after the first.

    The first second is counted from the first start, and the bucket starts full: the
    burst of 2 at t0, then the 10 tokens that arrive over the second. The 10th arrives at
    t0 + 1 by the bucket's clock, which is read a few ms before the lease statement that
    sets start_time, so [t0, t0 + 1) holds 11 (2 + 9) or 12 (2 + 10) starts: at most 10 a
    second plus the burst (and, as every second, no fewer than 9).

    Over the 5 s: the burst plus 10 a second at most, and at most one token lost.
    """
    return (
        len(counts) == RATE_WINDOWS
        and all(9 <= c <= 11 for c in counts[1:])
        and 9 <= counts[0] <= 10 + BURST_10
        and 10 * RATE_WINDOWS - 1 <= sum(counts) <= BURST_10 + 10 * RATE_WINDOWS
    )


async def rate_run(
    server: ConveyorServer, keys: dict[str, str], database_url: str, queue: str
) -> tuple[list[int], str]:
    """Two workers on the server drain a "10/s" queue for 5 s (the bucket is theirs to
    share; across replicas it is shared the same way, see test_flow_limits.py): the
    starts in each second from the first start (by task_attempts.start_time), and a
    description of the run."""
    in_flight = InFlight()

    async def tick(ctx: TaskContext) -> None:
        # A second: about ten tasks run at once, so starts cannot ride on reports (a
        # report's lease looks at the bucket too); a stream with room left must look
        # again by itself when the next token is due.
        with in_flight.running():
            await asyncio.sleep(1.0)

    async with AsyncClient(server.grpc_target, api_key=keys["operator"], project=PROJECT) as ops:
        updated = await ops.update_queue(queue, rate_limit="10/s")
        assert updated.rate_limit == "10/s"
        # More than 5.4 s can start (10/s plus the bucket's burst), so demand never runs
        # dry; not many more, as every look at the queue reads its ready tasks.
        total = 64
        created = await ops.batch_create_tasks(
            [{"kind": "rate.tick", "queue": queue, "input": {"i": i}} for i in range(total)]
        )
        assert all(r.task.name for r in created.results)
        targets = [server.grpc_target] * 2
        async with workers(targets, keys["worker"], queue, {"rate.tick": tick}, concurrency=8):
            await until(lambda: _started(in_flight), within=15)
            await asyncio.sleep(RATE_WINDOWS + 0.4 - (time.monotonic() - in_flight.started[0]))

    rows = await attempts(database_url, queue)
    assert len(rows) < total
    t0 = rows[0].start
    offsets = [(r.start - t0).total_seconds() for r in rows]
    counts = [sum(1 for s in offsets if k <= s < k + 1) for k in range(RATE_WINDOWS)]
    return counts, f"{queue}: {counts}; starts at {[round(s, 3) for s in offsets]}"


async def _started(in_flight: InFlight) -> bool:
    return bool(in_flight.started)


async def test_a_leaser_that_waited_for_a_bucket_does_not_rewind_its_clock(
    database_url: str,
) -> None:
    """Two leasers (two replicas' pools) on one rate bucket: the one that began its
    transaction first but got the bucket's lock last reads the bucket as of when it got
    the lock, so it never stores a refill time older than the one it found (which would
    hand out the tokens of the time in between a second time)."""
    project, queue = "default", "clock"
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        # 2/s: a bucket of one token, refilled every 0.5 s.
        await conn.execute(
            "INSERT INTO queues (project, id, rate_limit) VALUES (%s, %s, '2/s')",
            [project, queue],
        )
        await conn.execute(
            "INSERT INTO tasks (project, id, queue, kind, state, root_task)"
            " SELECT %s, id, %s, 'test.kind', 'QUEUED', id"
            " FROM (SELECT gen_random_uuid() AS id FROM generate_series(1, 10)) AS g",
            [project, queue],
        )
    pools = [await open_pool(database_url, min_size=1, max_size=2) for _ in range(2)]
    try:
        first, second = Leases(pools[0]), Leases(pools[1])
        # The first lease makes the bucket and empties it.
        assert len(await first.take(project, Take("w1", (queue,), 5))) == 1
        locks = sorted(
            {
                f"conveyor/queue/{project}/{queue}",
                f"conveyor/rate/{project}/queue/{queue}/",
            }
        )
        # Another leaser holds the bucket's locks while `first` begins its transaction and
        # waits for them; before letting go it leaves the bucket as a lease would: refilled
        # to its clock, holding a token.
        async with await psycopg.AsyncConnection.connect(database_url) as holder:
            await holder.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended(k, 0)) FROM unnest(%s::text[]) AS k",
                [locks],
            )
            waiting = asyncio.create_task(first.take(project, Take("w1", (queue,), 5)))
            await asyncio.sleep(0.8)
            cur = await holder.execute(
                "UPDATE rate_limits SET tokens = 1, refill_time = clock_timestamp()"
                " WHERE project = %s AND scope = 'queue' AND key = %s RETURNING refill_time",
                [project, queue],
            )
            row = await cur.fetchone()
            assert row is not None
            held_refill = row[0]
            await holder.commit()
        assert len(await waiting) == 1  # the token
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            cur = await conn.execute(
                "SELECT tokens, refill_time FROM rate_limits"
                " WHERE project = %s AND scope = 'queue' AND key = %s",
                [project, queue],
            )
            bucket = await cur.fetchone()
        assert bucket is not None
        tokens, refill_time = bucket
        assert refill_time >= held_refill
        assert tokens < 1
        # So the next leaser, right after, finds the bucket empty, not refilled for the
        # 0.8 s the first one waited.
        assert await second.take(project, Take("w2", (queue,), 5)) == []
    finally:
        for pool in pools:
            await pool.close()
