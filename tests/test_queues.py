"""QueueService: first use, stats, purge token, pause/resume events, UpdateQueue."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import uuid
from collections.abc import AsyncIterator, Awaitable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
import pytest_asyncio
from google.protobuf import duration_pb2, field_mask_pb2, timestamp_pb2

from conveyor.client import AsyncClient, InvalidArgumentError, NotFoundError
from conveyor.server.app import ConveyorServer
from conveyor.server.domain import rates
from conveyor.server.errors import InvalidArgument
from conveyor.v1 import enums_pb2, queue_pb2, task_pb2, task_service_pb2

PARENT = "projects/alpha"


@pytest_asyncio.fixture
async def client(server: ConveyorServer, keys: dict[str, str]) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(server.grpc_target, api_key=keys["operator"]) as c:
        yield c


def _queue(name: str) -> str:
    return f"projects/alpha/queues/{name}"


async def _create(client: AsyncClient, queue: str, **fields: Any) -> task_pb2.Task:
    return await client.tasks.CreateTask(
        task_service_pb2.CreateTaskRequest(
            parent=PARENT, task=task_pb2.Task(kind="k", queue=queue, **fields)
        )
    )


async def _get(client: AsyncClient, name: str) -> queue_pb2.Queue:
    return await client.queues.GetQueue(queue_pb2.GetQueueRequest(name=_queue(name)))


async def _sql(database_url: str, statement: str, *args: Any) -> list[Any]:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        cur = await conn.execute(statement, args)
        return list(await cur.fetchall()) if cur.description else []


async def _update(client: AsyncClient, queue: queue_pb2.Queue, *paths: str) -> queue_pb2.Queue:
    return await client.queues.UpdateQueue(
        queue_pb2.UpdateQueueRequest(
            queue=queue, update_mask=field_mask_pb2.FieldMask(paths=list(paths))
        )
    )


async def test_unknown_queue_is_not_found(client: AsyncClient) -> None:
    with pytest.raises(NotFoundError):
        await _get(client, "never-used")
    with pytest.raises(InvalidArgumentError) as caught:
        await client.queues.GetQueue(queue_pb2.GetQueueRequest(name="projects/alpha/queues/a b"))
    assert caught.value.field_violations[0][0] == "name"


async def test_stats_count_tasks_by_state(
    client: AsyncClient, database_url: str, server: ConveyorServer
) -> None:
    later = timestamp_pb2.Timestamp()
    later.FromDatetime(datetime.now(UTC) + timedelta(hours=1))
    made = [await _create(client, "work") for _ in range(7)]
    await _create(client, "work", schedule_time=later)
    await _create(client, "work", requires_approval=True)
    await _create(client, "other")
    ids = [uuid.UUID(t.name.rsplit("/", 1)[1]) for t in made]
    await _sql(
        database_url,
        "UPDATE tasks SET state = 'RUNNING', attempt = 1, worker = 'w', lease_id ="
        " gen_random_uuid(), lease_expire_time = now() + interval '1 minute' WHERE id = %s",
        ids[0],
    )
    await _sql(
        database_url,
        "UPDATE tasks SET state = 'SUCCEEDED', end_time = now() WHERE id = ANY(%s)",
        ids[1:3],
    )
    await _sql(
        database_url,
        "UPDATE tasks SET state = 'FAILED', end_time = now() - interval '2 hours' WHERE id = %s",
        ids[3],
    )
    await _sql(
        database_url, "UPDATE tasks SET state = 'FAILED', end_time = now() WHERE id = %s", ids[4]
    )
    # The oldest ready task has waited since its create time.
    await _sql(
        database_url,
        "UPDATE tasks SET create_time = now() - interval '10 minutes',"
        " schedule_time = now() - interval '10 minutes' WHERE id = %s",
        ids[5],
    )

    queue = await _get(client, "work")
    assert queue.name == _queue("work")
    assert queue.stats == queue_pb2.QueueStats(
        queued=2,
        scheduled=1,
        running=1,
        awaiting_approval=1,
        oldest_queued_age=queue.stats.oldest_queued_age,
        succeeded_last_hour=2,
        failed_last_hour=1,
    )
    age = queue.stats.oldest_queued_age.ToTimedelta()
    assert timedelta(minutes=10) <= age < timedelta(minutes=11)
    expected = hmac.new(
        server.context.server_key, f"{_queue('work')}:2".encode(), hashlib.sha256
    ).hexdigest()
    assert queue.purge_confirm_token == expected
    empty = await _get(client, "other")
    assert empty.stats.queued == 1 and empty.purge_confirm_token != expected


async def test_list_queues_pages_by_name(
    client: AsyncClient, server: ConveyorServer, admin_key: str
) -> None:
    for name in ("c", "a", "e", "b", "d"):
        await _create(client, name)
    async with AsyncClient(server.grpc_target, api_key=admin_key) as admin:
        await admin.tasks.CreateTask(
            task_service_pb2.CreateTaskRequest(
                parent="projects/beta", task=task_pb2.Task(kind="k", queue="zzz")
            )
        )
    names: list[str] = []
    token = ""
    while True:
        page = await client.queues.ListQueues(
            queue_pb2.ListQueuesRequest(parent=PARENT, page_size=2, page_token=token)
        )
        names.extend(q.name for q in page.queues)
        assert all(q.stats.queued == 1 for q in page.queues)
        token = page.next_page_token
        if not token:
            break
    assert names == [_queue(n) for n in "abcde"]
    with pytest.raises(InvalidArgumentError) as caught:
        await client.queues.ListQueues(queue_pb2.ListQueuesRequest(parent=PARENT, page_size=-1))
    assert caught.value.field_violations[0][0] == "page_size"


async def test_pause_and_resume_are_idempotent_and_logged(
    client: AsyncClient, database_url: str
) -> None:
    await _create(client, "jobs")
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as listener:
        await listener.execute("LISTEN conveyor_tasks")
        paused = await client.queues.PauseQueue(
            queue_pb2.PauseQueueRequest(name=_queue("jobs"), reason="deploy")
        )
        again = await client.queues.PauseQueue(
            queue_pb2.PauseQueueRequest(name=_queue("jobs"), reason="other")
        )
        assert (paused.paused, paused.pause_reason) == (True, "deploy")
        assert (again.paused, again.pause_reason) == (True, "deploy")

        # A paused queue still takes tasks.
        task = await _create(client, "jobs")
        assert task.state == enums_pb2.TASK_STATE_QUEUED
        assert (await _get(client, "jobs")).stats.queued == 2

        resumed = await client.queues.ResumeQueue(queue_pb2.ResumeQueueRequest(name=_queue("jobs")))
        await client.queues.ResumeQueue(queue_pb2.ResumeQueueRequest(name=_queue("jobs")))
        assert (resumed.paused, resumed.pause_reason) == (False, "")
        # Resuming wakes the queue's workers.
        async with asyncio.timeout(5):
            async for note in listener.notifies():
                if note.payload == "alpha/jobs":
                    break

    rows = await _sql(
        database_url,
        "SELECT type, subject, data FROM events WHERE type LIKE 'queue.%%' ORDER BY id",
    )
    assert rows == [
        ("queue.paused", _queue("jobs"), {"reason": "deploy"}),
        ("queue.resumed", _queue("jobs"), {}),
    ]


async def test_pausing_an_unused_queue_creates_it_paused(client: AsyncClient) -> None:
    queue = await client.queues.PauseQueue(
        queue_pb2.PauseQueueRequest(name=_queue("later"), reason="not yet")
    )
    assert queue.paused and queue.stats.queued == 0
    assert (await _get(client, "later")).paused
    task = await _create(client, "later")
    assert task.state == enums_pb2.TASK_STATE_QUEUED


async def test_update_queue_with_a_mask(client: AsyncClient) -> None:
    await _create(client, "q")
    policy = task_pb2.RetryPolicy(
        max_attempts=5,
        backoff=enums_pb2.BACKOFF_LINEAR,
        initial_backoff=duration_pb2.Duration(seconds=2),
    )
    everything = await _update(
        client,
        queue_pb2.Queue(
            name=_queue("q"), max_concurrency=1, rate_limit="100 / M", default_retry_policy=policy
        ),
    )
    assert (everything.max_concurrency, everything.rate_limit) == (1, "100/m")
    assert everything.default_retry_policy == policy

    only_rate = await _update(
        client, queue_pb2.Queue(name=_queue("q"), max_concurrency=50, rate_limit="7"), "rate_limit"
    )
    assert (only_rate.max_concurrency, only_rate.rate_limit) == (1, "7/s")
    assert only_rate.default_retry_policy == policy

    cleared = await _update(
        client,
        queue_pb2.Queue(name=_queue("q"), rate_limit="0"),
        "rate_limit",
        "default_retry_policy",
        "max_concurrency",
    )
    assert (cleared.max_concurrency, cleared.rate_limit) == (0, "")
    assert cleared.default_retry_policy == task_pb2.RetryPolicy()
    assert cleared.update_time.ToDatetime() >= cleared.create_time.ToDatetime()

    # Output-only fields in the body are ignored.
    ignored = await _update(
        client,
        queue_pb2.Queue(name=_queue("q"), paused=True, stats=queue_pb2.QueueStats(queued=99)),
        "max_concurrency",
    )
    assert not ignored.paused and ignored.stats.queued == 1


async def test_update_queue_refuses_bad_fields_and_changes_nothing(client: AsyncClient) -> None:
    await _create(client, "q")
    cases: list[tuple[queue_pb2.Queue, list[str], str]] = [
        (queue_pb2.Queue(max_concurrency=-1), [], "queue.max_concurrency"),
        (queue_pb2.Queue(rate_limit="fast"), ["rate_limit"], "queue.rate_limit"),
        (queue_pb2.Queue(rate_limit="10/d"), ["rate_limit"], "queue.rate_limit"),
        (queue_pb2.Queue(rate_limit="99999999/s"), ["rate_limit"], "queue.rate_limit"),
        (
            queue_pb2.Queue(default_retry_policy=task_pb2.RetryPolicy(max_attempts=-3)),
            ["default_retry_policy"],
            "queue.default_retry_policy.max_attempts",
        ),
        (queue_pb2.Queue(), ["paused"], "update_mask"),
    ]
    for queue, paths, field in cases:
        queue.name = _queue("q")
        with pytest.raises(InvalidArgumentError) as caught:
            await _update(client, queue, *paths)
        assert [f for f, _ in caught.value.field_violations] == [field], field
    unchanged = await _get(client, "q")
    assert (unchanged.max_concurrency, unchanged.rate_limit) == (0, "")
    with pytest.raises(InvalidArgumentError) as caught:
        await _update(client, queue_pb2.Queue(name="projects/alpha/queues/"))
    assert caught.value.field_violations[0][0] == "queue.name"


def test_rate_grammar() -> None:
    assert rates.normalise("100/m", "f") == "100/m"
    assert rates.normalise(" 5 /H ", "f") == "5/h"
    assert rates.normalise("12", "f") == "12/s"
    assert rates.normalise("", "f") == rates.normalise("0/m", "f") == ""
    parsed = rates.parse("120/m", "f")
    assert parsed is not None and parsed.per_second == 2
    for bad in ("-1", "1.5/s", "ten", "5/", "/s", "5/sec"):
        with pytest.raises(InvalidArgument) as caught:
            rates.parse(bad, "f")
        assert caught.value.violations[0].field == "f"


async def test_steering_a_queue_of_a_missing_project_is_not_found(
    server: ConveyorServer, admin_key: str, database_url: str
) -> None:
    async with AsyncClient(server.grpc_target, api_key=admin_key) as admin:
        name = "projects/nowhere/queues/q"
        calls: list[Awaitable[object]] = [
            admin.queues.PauseQueue(queue_pb2.PauseQueueRequest(name=name)),
            admin.queues.ResumeQueue(queue_pb2.ResumeQueueRequest(name=name)),
            admin.queues.UpdateQueue(
                queue_pb2.UpdateQueueRequest(queue=queue_pb2.Queue(name=name))
            ),
            admin.tasks.CreateTask(
                task_service_pb2.CreateTaskRequest(
                    parent="projects/nowhere", task=task_pb2.Task(kind="k")
                )
            ),
        ]
        for call in calls:
            with pytest.raises(NotFoundError):
                await call
    assert await _sql(database_url, "SELECT count(*) FROM queues") == [(0,)]
