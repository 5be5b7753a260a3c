"""Every way a dependency ends resolves its dependents in that transaction: the lease
reaper, a purge, two ends racing in two transactions; and retention keeps a finished
task while a live task still depends on it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest_asyncio

from conveyor.client import AsyncClient
from conveyor.server.app import ConveyorServer
from conveyor.server.loops.reaper import Reaper
from conveyor.server.loops.task_retention import TaskRetentionLoop
from conveyor.v1 import command_pb2, enums_pb2, task_pb2

QUEUED = enums_pb2.TASK_STATE_QUEUED
CANCELLED = enums_pb2.TASK_STATE_CANCELLED


@pytest_asyncio.fixture
async def client(server: ConveyorServer, keys: dict[str, str]) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(server.grpc_target, api_key=keys["admin"], project="alpha") as c:
        yield c


async def _finish(c: AsyncClient, queue: str) -> task_pb2.Task:
    (lease,) = await c.lease_tasks([queue], worker="w-1", wait_timeout=5)
    return await c.complete_task(lease.task.name, lease.lease_id)


def _id(task: task_pb2.Task) -> uuid.UUID:
    return uuid.UUID(task.name.rsplit("/", 1)[1])


async def test_a_lease_lost_for_good_cancels_dependents(
    client: AsyncClient, server: ConveyorServer
) -> None:
    a = await client.create_task("k", queue="a", retry_policy={"max_attempts": 1})
    strict = await client.create_task("k", queue="s", depends_on=[a.name])
    assert len(await client.lease_tasks(["a"], worker="w-1", wait_timeout=5)) == 1
    later = datetime.now(UTC) + timedelta(hours=1)
    assert (await Reaper(server.context.pool).run_once(now=later)).interrupted == 1
    assert (await client.get_task(a.name)).state == enums_pb2.TASK_STATE_INTERRUPTED
    got = await client.get_task(strict.name)
    assert (got.state, got.state_reason) == (CANCELLED, f"dependency {a.name} was interrupted")


async def test_an_execution_timeout_without_retries_cancels_dependents(
    client: AsyncClient, server: ConveyorServer
) -> None:
    a = await client.create_task(
        "k", queue="a", execution_timeout=1, retry_policy={"max_attempts": 1}
    )
    strict = await client.create_task("k", queue="s", depends_on=[a.name])
    assert len(await client.lease_tasks(["a"], worker="w-1", wait_timeout=5)) == 1
    later = datetime.now(UTC) + timedelta(seconds=10)  # past the timeout, not the lease
    assert (await Reaper(server.context.pool).run_once(now=later)).timed_out == 1
    assert (await client.get_task(a.name)).state == enums_pb2.TASK_STATE_FAILED
    got = await client.get_task(strict.name)
    assert (got.state, got.state_reason) == (CANCELLED, f"dependency {a.name} failed")
    # RetryTask runs a task its dependency cancelled, now that it is asked to.
    await client.commands.RetryTask(
        command_pb2.RetryTaskRequest(parent="projects/alpha", task=strict.name)
    )
    assert (await client.get_task(strict.name)).state == QUEUED


async def test_a_purge_cancels_dependents(client: AsyncClient) -> None:
    a = await client.create_task("k", queue="purged")
    strict = await client.create_task("k", queue="s", depends_on=[a.name])
    lenient = await client.create_task(
        "k", queue="l", depends_on=[a.name], dependency_failure_policy="run_anyway"
    )
    purged = await client.commands.PurgeQueue(
        command_pb2.PurgeQueueRequest(parent="projects/alpha", queue="purged", force=True)
    )
    assert purged.name
    got = await client.get_task(strict.name)
    assert (got.state, got.state_reason) == (CANCELLED, f"dependency {a.name} was cancelled")
    assert (await client.get_task(lenient.name)).state == QUEUED


async def _end_in_open_transaction(url: str, task: uuid.UUID) -> psycopg.AsyncConnection:
    """Ends `task` (SUCCEEDED) in a transaction left open; the caller commits it."""
    conn = await psycopg.AsyncConnection.connect(url)
    await conn.execute(
        "UPDATE tasks SET state = 'SUCCEEDED', end_time = now(), update_time = now()"
        " WHERE project = 'alpha' AND id = %s",
        (task,),
    )
    return conn


async def test_two_dependencies_ending_at_once_release_the_dependent_once(
    client: AsyncClient, database_url: str
) -> None:
    a = await client.create_task("k", queue="a")
    b = await client.create_task("k", queue="b")
    join = await client.create_task("k", queue="join", depends_on=[a.name, b.name])
    # Both ends are made, then committed at once: each commit locks the dependent before
    # reading its count, so one of them takes it to 0 and releases it, and only one.
    first = await _end_in_open_transaction(database_url, _id(a))
    second = await _end_in_open_transaction(database_url, _id(b))
    try:
        assert (await client.get_task(join.name)).state == enums_pb2.TASK_STATE_SCHEDULED
        await asyncio.gather(first.commit(), second.commit())
    finally:
        await first.close()
        await second.close()
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as probe:
        cur = await probe.execute(
            "SELECT state, deps_remaining,"
            " (SELECT count(*) FROM events e WHERE e.project = 'alpha'"
            "   AND e.subject = %(name)s AND e.type = 'task.queued')"
            " FROM tasks WHERE project = 'alpha' AND id = %(id)s",
            {"name": join.name, "id": _id(join)},
        )
        assert await cur.fetchone() == ("QUEUED", 0, 1)


async def test_retention_keeps_a_task_that_a_live_task_depends_on(
    client: AsyncClient, server: ConveyorServer
) -> None:
    await client.create_task("k", queue="done")
    done = await _finish(client, "done")
    other = await client.create_task("k", queue="other")
    waiting = await client.create_task("k", queue="w", depends_on=[done.name, other.name])
    loop = TaskRetentionLoop(server.context.pool)
    future = datetime.now(UTC) + timedelta(days=31)
    assert await loop.run_once(future) == 0
    assert (await client.get_task(done.name)).name == done.name
    # Once the dependent finishes, the dependency may go (and the others with it).
    await _finish(client, "other")
    assert (await _finish(client, "w")).name == waiting.name
    assert await loop.run_once(future) == 3


async def test_a_create_racing_the_end_of_its_dependency(
    client: AsyncClient, database_url: str
) -> None:
    # The dependency ends in a transaction still open while the create runs: the create
    # does not wait for its row (NOWAIT) but tries again, and once that end commits it
    # sees it, so the new task is QUEUED once, whichever came first.
    a = await client.create_task("k", queue="a")
    ending = await _end_in_open_transaction(database_url, _id(a))
    try:
        create = asyncio.create_task(client.create_task("k", queue="b", depends_on=[a.name]))
        await asyncio.sleep(0.05)  # lets the create meet the lock (the outcome holds anyway)
        await ending.commit()
        created = await create
    finally:
        await ending.close()
    assert created.state == QUEUED
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as probe:
        cur = await probe.execute(
            "SELECT count(*) FROM events WHERE project = 'alpha' AND subject = %s"
            " AND type = 'task.queued'",
            (created.name,),
        )
        assert await cur.fetchone() == (1,)
