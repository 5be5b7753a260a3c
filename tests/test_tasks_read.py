"""GetTask (attempts, blocked_reason) and ListTasks (filters, order_by, keyset pages)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
import pytest_asyncio
from google.protobuf import timestamp_pb2

from conveyor.client import AsyncClient, InvalidArgumentError, NotFoundError
from conveyor.server.app import ConveyorServer
from conveyor.v1 import enums_pb2, queue_pb2, task_pb2, task_service_pb2

PARENT = "projects/alpha"


@pytest_asyncio.fixture
async def client(server: ConveyorServer, keys: dict[str, str]) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(server.grpc_target, api_key=keys["operator"]) as c:
        yield c


async def _create(client: AsyncClient, **fields: Any) -> task_pb2.Task:
    fields.setdefault("kind", "k")
    return await client.tasks.CreateTask(
        task_service_pb2.CreateTaskRequest(parent=PARENT, task=task_pb2.Task(**fields))
    )


async def _get(client: AsyncClient, name: str) -> task_pb2.Task:
    return await client.tasks.GetTask(task_service_pb2.GetTaskRequest(name=name))


def _id(name: str) -> uuid.UUID:
    return uuid.UUID(name.rsplit("/", 1)[1])


async def _sql(database_url: str, statement: str, *args: Any) -> None:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await conn.execute(statement, args)


async def _run(database_url: str, name: str, worker: str = "w1") -> None:
    """Puts a task in RUNNING as a lease would (attempt 1, a live lease)."""
    await _sql(
        database_url,
        "UPDATE tasks SET state = 'RUNNING', attempt = 1, worker = %s,"
        " lease_id = gen_random_uuid(), lease_expire_time = now() + interval '1 minute',"
        " start_time = now() WHERE id = %s",
        worker,
        _id(name),
    )


async def _worker(database_url: str, queues: list[str], seen: str = "now()") -> None:
    await _sql(
        database_url,
        "INSERT INTO workers (project, id, queues, connected, last_seen_time)"
        f" VALUES ('alpha', 'w-' || gen_random_uuid(), %s, true, {seen})",
        queues,
    )


async def test_get_unknown_or_malformed(client: AsyncClient) -> None:
    with pytest.raises(NotFoundError):
        await _get(client, f"projects/alpha/tasks/{uuid.uuid4()}")
    for bad in ("projects/alpha/tasks/nope", "tasks/x", ""):
        with pytest.raises(InvalidArgumentError) as caught:
            await _get(client, bad)
        assert caught.value.field_violations[0][0] == "name"


async def test_get_shows_attempts_in_order(client: AsyncClient, database_url: str) -> None:
    task = await _create(client)
    lease_1, lease_2 = uuid.uuid4(), uuid.uuid4()
    await _sql(
        database_url,
        "INSERT INTO task_attempts"
        " (project, task_id, attempt, worker, lease_id, start_time, end_time, outcome, error)"
        " VALUES ('alpha', %s, 2, 'w2', %s, now(), NULL, NULL, NULL),"
        " ('alpha', %s, 1, 'w1', %s, now() - interval '1 minute', now() - interval '30 seconds',"
        '  \'FAILED\', \'{"type": "TimeoutError", "message": "slow", "retryable": true}\')',
        _id(task.name),
        lease_2,
        _id(task.name),
        lease_1,
    )
    got = await _get(client, task.name)
    first, second = got.attempts
    assert (first.attempt, first.worker, first.lease_id) == (
        1,
        "projects/alpha/workers/w1",
        str(lease_1),
    )
    assert first.outcome == enums_pb2.ATTEMPT_OUTCOME_FAILED
    assert (first.error.type, first.error.message, first.error.retryable) == (
        "TimeoutError",
        "slow",
        True,
    )
    assert first.end_time.ToDatetime() > first.start_time.ToDatetime()
    assert (second.attempt, second.outcome, second.HasField("end_time")) == (
        2,
        enums_pb2.ATTEMPT_OUTCOME_UNSPECIFIED,
        False,
    )


async def test_blocked_reason_says_why_a_waiting_task_does_not_run(
    client: AsyncClient, database_url: str
) -> None:
    async def reason(name: str) -> str:
        return enums_pb2.BlockedReason.Name((await _get(client, name)).blocked_reason)

    queued = await _create(client, queue="q")
    assert await reason(queued.name) == "BLOCKED_REASON_NO_WORKER"
    await _worker(database_url, ["other"])
    await _worker(database_url, ["q"], seen="now() - interval '1 hour'")  # stale
    assert await reason(queued.name) == "BLOCKED_REASON_NO_WORKER"
    await _worker(database_url, ["x", "q"])
    assert await reason(queued.name) == "BLOCKED_REASON_UNSPECIFIED"

    later = timestamp_pb2.Timestamp()
    later.FromDatetime(datetime.now(UTC) + timedelta(hours=1))
    scheduled = await _create(client, queue="q", schedule_time=later)
    assert await reason(scheduled.name) == "BLOCKED_REASON_SCHEDULED_IN_FUTURE"
    approval = await _create(client, queue="q", requires_approval=True)
    assert await reason(approval.name) == "BLOCKED_REASON_AWAITING_APPROVAL"

    await client.queues.UpdateQueue(
        queue_pb2.UpdateQueueRequest(
            queue=queue_pb2.Queue(name="projects/alpha/queues/q", max_concurrency=1)
        )
    )
    running = await _create(client, queue="q")
    await _run(database_url, running.name)
    assert await reason(queued.name) == "BLOCKED_REASON_CONCURRENCY_LIMITED"
    assert await reason(running.name) == "BLOCKED_REASON_UNSPECIFIED"

    await client.queues.PauseQueue(queue_pb2.PauseQueueRequest(name="projects/alpha/queues/q"))
    assert await reason(queued.name) == "BLOCKED_REASON_QUEUE_PAUSED"
    # Approval and schedule_time come first: they would block even on a running queue.
    assert await reason(approval.name) == "BLOCKED_REASON_AWAITING_APPROVAL"
    assert await reason(scheduled.name) == "BLOCKED_REASON_SCHEDULED_IN_FUTURE"

    # ListTasks says the same of each task on its page, read at the same moment.
    page = await client.tasks.ListTasks(task_service_pb2.ListTasksRequest(parent=PARENT))
    listed = {t.name: enums_pb2.BlockedReason.Name(t.blocked_reason) for t in page.tasks}
    assert listed == {
        queued.name: "BLOCKED_REASON_QUEUE_PAUSED",
        scheduled.name: "BLOCKED_REASON_SCHEDULED_IN_FUTURE",
        approval.name: "BLOCKED_REASON_AWAITING_APPROVAL",
        running.name: "BLOCKED_REASON_UNSPECIFIED",
    }

    # Reasons are not stored: a terminal task has none.
    await _sql(
        database_url,
        "UPDATE tasks SET state = 'CANCELLED', end_time = now() WHERE id = %s",
        _id(queued.name),
    )
    assert await reason(queued.name) == "BLOCKED_REASON_UNSPECIFIED"


async def _list(
    client: AsyncClient,
    *,
    order_by: str = "",
    page_size: int = 0,
    page_token: str = "",
    **filter_fields: Any,
) -> task_service_pb2.ListTasksResponse:
    return await client.tasks.ListTasks(
        task_service_pb2.ListTasksRequest(
            parent=PARENT,
            filter=task_pb2.TaskFilter(**filter_fields),
            page_size=page_size,
            page_token=page_token,
            order_by=order_by,
        )
    )


async def _all(client: AsyncClient, page_size: int = 3, **kwargs: Any) -> list[task_pb2.Task]:
    tasks: list[task_pb2.Task] = []
    token = ""
    while True:
        page = await _list(client, page_size=page_size, page_token=token, **kwargs)
        tasks.extend(page.tasks)
        token = page.next_page_token
        if not token:
            return tasks


async def test_order_by_variants(client: AsyncClient) -> None:
    made = [await _create(client, priority=p) for p in (5, 1, 9, 1, 3, 5, 7)]
    by_time = [t.name for t in made]

    assert [t.name for t in await _all(client)] == by_time
    assert [t.name for t in await _all(client, order_by="create_time")] == by_time
    assert [t.name for t in await _all(client, order_by="create_time desc")] == by_time[::-1]
    by_priority = [t.name for t in sorted(made, key=lambda t: (t.priority, t.name))]
    assert [t.name for t in await _all(client, order_by="priority")] == by_priority
    assert [t.name for t in await _all(client, order_by="  Priority   DESC ")] == (
        by_priority[::-1]
    )
    for bad in ("name", "priority sideways", "create_time,priority"):
        with pytest.raises(InvalidArgumentError) as caught:
            await _list(client, order_by=bad)
        assert caught.value.field_violations[0][0] == "order_by"


async def test_page_size_and_tokens_are_checked(client: AsyncClient) -> None:
    for _ in range(3):
        await _create(client)
    assert len((await _list(client)).tasks) == 3
    page = await _list(client, page_size=2)
    assert len(page.tasks) == 2 and page.next_page_token
    for size in (-1, 5001):
        with pytest.raises(InvalidArgumentError) as caught:
            await _list(client, page_size=size)
        assert caught.value.field_violations[0][0] == "page_size"
    with pytest.raises(InvalidArgumentError) as caught:
        await _list(client, page_token="garbage!")
    assert caught.value.field_violations[0][0] == "page_token"
    # A token belongs to its filter and order.
    with pytest.raises(InvalidArgumentError) as caught:
        await _list(client, page_size=2, page_token=page.next_page_token, order_by="priority")
    assert caught.value.field_violations[0][0] == "page_token"
    with pytest.raises(InvalidArgumentError) as caught:
        await _list(client, page_size=2, page_token=page.next_page_token, kinds=["k"])
    assert caught.value.field_violations[0][0] == "page_token"
    # ... but page_size may change between pages.
    rest = await _list(client, page_size=10, page_token=page.next_page_token)
    assert len(rest.tasks) == 1 and not rest.next_page_token


@pytest.mark.parametrize(
    "order_by", ["create_time", "create_time desc", "priority", "priority desc"]
)
async def test_pages_are_stable_while_tasks_are_added(client: AsyncClient, order_by: str) -> None:
    before = await client.tasks.BatchCreateTasks(
        task_service_pb2.BatchCreateTasksRequest(
            parent=PARENT,
            requests=[
                task_service_pb2.CreateTaskRequest(task=task_pb2.Task(kind="k", priority=1 + i % 9))
                for i in range(120)
            ],
        )
    )
    existing = {r.task.name for r in before.results}
    stop = asyncio.Event()

    async def insert() -> int:
        added = 0
        while not stop.is_set():
            await _create(client, priority=1 + added % 9)
            added += 1
        return added

    inserter = asyncio.create_task(insert())
    seen: list[str] = []
    token = ""
    while True:
        page = await _list(client, order_by=order_by, page_size=7, page_token=token)
        seen.extend(t.name for t in page.tasks)
        token = page.next_page_token
        await asyncio.sleep(0)  # let inserts land between pages
        if not token:
            break
    stop.set()
    added = await inserter
    assert added > 0
    assert len(seen) == len(set(seen)), "a task was listed twice"
    assert existing <= set(seen), "a task present when paging began was skipped"


async def test_filters_and_their_combinations(
    client: AsyncClient, database_url: str, server: ConveyorServer, admin_key: str
) -> None:
    root = await _create(client, kind="plan.make", queue="agents", correlation_id="c1")
    child = await _create(
        client,
        kind="plan.step",
        queue="agents",
        priority=1,
        parent_task=root.name,
        labels={"team": "a", "env": "prod"},
        correlation_id="c1",
    )
    mail = await _create(client, kind="email.send", queue="mail", priority=7, labels={"team": "b"})
    percent = await _create(client, kind="100%_done", queue="mail", priority=3)
    await _run(database_url, mail.name, worker="mailer-1")
    await _sql(
        database_url, "UPDATE tasks SET summary = 'sent 3 mails' WHERE id = %s", _id(mail.name)
    )
    async with AsyncClient(server.grpc_target, api_key=admin_key) as admin:
        await admin.tasks.CreateTask(
            task_service_pb2.CreateTaskRequest(
                parent="projects/beta", task=task_pb2.Task(kind="plan.make")
            )
        )

    async def names(**filter_fields: Any) -> set[str]:
        return {t.name for t in await _all(client, **filter_fields)}

    everything = {root.name, child.name, mail.name, percent.name}
    assert await names() == everything  # beta's task is never listed
    assert await names(states=[enums_pb2.TASK_STATE_RUNNING]) == {mail.name}
    assert await names(states=[enums_pb2.TASK_STATE_QUEUED]) == everything - {mail.name}
    assert await names(priorities=["1", "low"]) == {child.name, mail.name}
    assert await names(priorities=["critical", "HIGH", "normal"]) == {
        child.name,
        percent.name,
        root.name,
    }
    assert await names(kinds=["plan.make", "email.send"]) == {root.name, mail.name}
    assert await names(queues=["mail"]) == {mail.name, percent.name}
    assert await names(workers=["mailer-1"]) == {mail.name}
    assert await names(workers=["projects/alpha/workers/mailer-1"]) == {mail.name}
    assert await names(correlation_id="c1") == {root.name, child.name}
    assert await names(root_task=root.name) == {root.name, child.name}
    assert await names(labels={"team": "a"}) == {child.name}
    assert await names(labels={"team": "a", "env": "dev"}) == set()
    assert await names(search="PLAN") == {root.name, child.name}
    assert await names(search="mailer") == {mail.name}  # the worker
    assert await names(search="3 mails") == {mail.name}  # the summary
    assert await names(search="100%") == {percent.name}  # % is literal
    assert await names(search="_") == {percent.name}  # and so is _
    # Fields AND together; values of one field OR.
    assert await names(queues=["agents", "mail"], priorities=["1", "3"], search="plan") == {
        child.name
    }

    made = {t.name: t.create_time.ToDatetime() for t in (root, child, mail, percent)}
    cut = child.create_time
    assert await names(create_time_after=cut) == {
        n for n, t in made.items() if t >= cut.ToDatetime()
    }
    assert await names(create_time_before=cut) == {
        n for n, t in made.items() if t < cut.ToDatetime()
    }
    assert await names(create_time_after=cut, create_time_before=cut) == set()
    assert await names(create_time_before=root.create_time) == set()

    bad_filters: list[tuple[dict[str, Any], str]] = [
        ({"priorities": ["0"]}, "filter.priorities"),
        ({"priorities": ["urgent"]}, "filter.priorities"),
        ({"states": [enums_pb2.TASK_STATE_UNSPECIFIED]}, "filter.states"),
        ({"root_task": "projects/alpha/tasks/nope"}, "filter.root_task"),
        ({"root_task": f"projects/beta/tasks/{uuid.uuid4()}"}, "filter.root_task"),
        ({"workers": ["projects/beta/workers/w"]}, "filter.workers"),
        ({"search": "x" * 201}, "filter.search"),
    ]
    for fields, path in bad_filters:
        with pytest.raises(InvalidArgumentError) as caught:
            await _list(client, **fields)
        assert caught.value.field_violations[0][0] == path, fields
