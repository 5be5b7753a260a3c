"""CreateTask through the real client: defaults, every field, bad input, request_id, batching."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
import pytest_asyncio
from google.protobuf import duration_pb2, timestamp_pb2
from psycopg_pool import AsyncConnectionPool

from conveyor.client import AlreadyExistsError, AsyncClient, InvalidArgumentError, NotFoundError
from conveyor.server.app import ConveyorServer
from conveyor.server.domain.task_ids import TaskIds, create_time_of
from conveyor.server.domain.task_input import new_task
from conveyor.server.store.task_batcher import CreateBatcher
from conveyor.server.store.task_inserts import INSERT_STATEMENT, Outcome
from conveyor.v1 import enums_pb2, queue_pb2, task_pb2, task_service_pb2

PARENT = "projects/alpha"


@pytest_asyncio.fixture
async def client(server: ConveyorServer, keys: dict[str, str]) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(server.grpc_target, api_key=keys["operator"]) as c:
        yield c


async def _create(client: AsyncClient, task: task_pb2.Task, request_id: str = "") -> task_pb2.Task:
    return await client.tasks.CreateTask(
        task_service_pb2.CreateTaskRequest(parent=PARENT, task=task, request_id=request_id)
    )


async def _get(client: AsyncClient, name: str) -> task_pb2.Task:
    return await client.tasks.GetTask(task_service_pb2.GetTaskRequest(name=name))


async def _counts(database_url: str) -> tuple[int, int, int]:
    """(tasks, task events, queues) in the database."""
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cur = await conn.execute(
            "SELECT (SELECT count(*) FROM tasks),"
            " (SELECT count(*) FROM events WHERE type LIKE 'task.%'),"
            " (SELECT count(*) FROM queues)"
        )
        row = await cur.fetchone()
    assert row is not None
    return row[0], row[1], row[2]


def _ms(value: int) -> duration_pb2.Duration:
    return duration_pb2.Duration(seconds=value // 1000, nanos=value % 1000 * 1_000_000)


def _at(moment: datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(moment)
    return ts


def _as_read(task: task_pb2.Task) -> task_pb2.Task:
    """A created task as GetTask shows it (blocked_reason is computed at read time)."""
    copy = task_pb2.Task()
    copy.CopyFrom(task)
    copy.ClearField("blocked_reason")
    return copy


async def test_defaults_and_the_answer_equal_what_get_reads_back(client: AsyncClient) -> None:
    created = await _create(client, task_pb2.Task(kind="email.send"))

    task_id = uuid.UUID(created.name.rsplit("/", 1)[1])
    assert task_id.version == 7
    assert created.queue == "default"
    assert created.priority == 5
    assert created.state == enums_pb2.TASK_STATE_QUEUED
    assert created.retry_policy == task_pb2.RetryPolicy(
        max_attempts=3,
        backoff=enums_pb2.BACKOFF_EXPONENTIAL_JITTER,
        initial_backoff=_ms(1000),
        max_backoff=_ms(3_600_000),
    )
    assert created.lease_duration == _ms(30_000)
    assert created.concurrency_limit == 1
    assert created.root_task == created.name
    assert not created.HasField("input")
    # The id carries the create time; an unset schedule_time means "now".
    assert created.create_time.ToDatetime(tzinfo=UTC) == create_time_of(task_id)
    assert created.schedule_time == created.create_time
    assert created.update_time.ToDatetime() >= created.create_time.ToDatetime()

    read = await _get(client, created.name)
    assert read.blocked_reason == enums_pb2.BLOCKED_REASON_NO_WORKER
    assert _as_read(read) == _as_read(created)


async def test_every_settable_field_is_stored(client: AsyncClient, database_url: str) -> None:
    parent = await _create(client, task_pb2.Task(kind="agent.plan"))
    later = datetime.now(UTC) + timedelta(hours=1)
    task = task_pb2.Task(
        queue="agents_v2.eu-west",
        kind="agent.run",
        priority=2,
        labels={"team": "search", "env": "prod"},
        retry_policy=task_pb2.RetryPolicy(
            max_attempts=7,
            backoff=enums_pb2.BACKOFF_LINEAR,
            initial_backoff=_ms(250),
            max_backoff=_ms(60_000),
        ),
        schedule_time=_at(later),
        lease_duration=_ms(90_000),
        concurrency_key="customer-42",
        concurrency_limit=3,
        requires_approval=True,
        approval_timeout=_ms(3_600_000),
        approval_timeout_action=enums_pb2.APPROVAL_ACTION_REJECT,
        correlation_id="order-1234",
        parent_task=parent.name,
        callback_url="https://hooks.example.com/done",
        resume_token="rollout-7:step-3",
    )
    task.input.struct_value.update(
        {"prompt": "hello", "n": 3, "ratio": 0.5, "tags": ["a", "b"], "none": None, "ok": True}
    )

    created = await _create(client, task)

    assert created.state == enums_pb2.TASK_STATE_AWAITING_APPROVAL
    assert created.root_task == parent.name
    for field in task.DESCRIPTOR.fields:
        # Output only, set by the server (creator: the calling key, test_tasks_creator.py).
        if field.name in ("name", "state", "root_task", "create_time", "update_time", "creator"):
            continue
        if field.message_type is not None and not field.is_repeated:
            has = created.HasField(field.name)  # type: ignore[arg-type]
            assert has == task.HasField(field.name), field.name  # type: ignore[arg-type]
        assert getattr(created, field.name) == getattr(task, field.name), field.name
    read = await _get(client, created.name)
    assert read.blocked_reason == enums_pb2.BLOCKED_REASON_AWAITING_APPROVAL
    assert _as_read(read) == _as_read(created)

    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cur = await conn.execute(
            "SELECT input, labels, approval_timeout_ms, approval_timeout_action, concurrency_key"
            " FROM tasks WHERE id = %s",
            (uuid.UUID(created.name.rsplit("/", 1)[1]),),
        )
        row = await cur.fetchone()
    assert row == (
        {"prompt": "hello", "n": 3, "ratio": 0.5, "tags": ["a", "b"], "none": None, "ok": True},
        {"team": "search", "env": "prod"},
        3_600_000,
        "REJECT",
        "customer-42",
    )


async def test_initial_state_follows_schedule_time_and_approval(client: AsyncClient) -> None:
    now = datetime.now(UTC)
    future = await _create(client, task_pb2.Task(kind="k", schedule_time=_at(now + timedelta(1))))
    past = await _create(client, task_pb2.Task(kind="k", schedule_time=_at(now - timedelta(1))))
    approval = await _create(client, task_pb2.Task(kind="k", requires_approval=True))

    assert future.state == enums_pb2.TASK_STATE_SCHEDULED
    assert (await _get(client, future.name)).blocked_reason == (
        enums_pb2.BLOCKED_REASON_SCHEDULED_IN_FUTURE
    )
    # A past schedule_time is kept: it orders the task earlier when leasing.
    assert past.state == enums_pb2.TASK_STATE_QUEUED
    assert past.schedule_time == _at(now - timedelta(1))
    assert approval.state == enums_pb2.TASK_STATE_AWAITING_APPROVAL


async def test_output_only_fields_are_ignored(client: AsyncClient) -> None:
    created = await _create(
        client,
        task_pb2.Task(
            name="projects/alpha/tasks/00000000-0000-7000-8000-000000000000",
            kind="k",
            state=enums_pb2.TASK_STATE_SUCCEEDED,
            state_reason="forged",
            attempt=9,
            root_task="projects/alpha/tasks/00000000-0000-7000-8000-000000000001",
            summary="forged",
            worker="projects/alpha/workers/w",
            schedule="projects/alpha/schedules/s",
            cancel_requested=True,
            blocked_reason=enums_pb2.BLOCKED_REASON_QUEUE_PAUSED,
            create_time=_at(datetime(2001, 1, 1, tzinfo=UTC)),
            error=task_pb2.TaskError(message="forged"),
            attempts=[task_pb2.Attempt(attempt=1)],
        ),
    )
    read = await _get(client, created.name)
    for task in (created, read):
        assert task.name != "projects/alpha/tasks/00000000-0000-7000-8000-000000000000"
        assert task.state == enums_pb2.TASK_STATE_QUEUED
        assert (task.state_reason, task.summary, task.worker, task.schedule) == ("", "", "", "")
        assert (task.attempt, task.cancel_requested, len(task.attempts)) == (0, False, 0)
        assert task.root_task == created.name
        assert not task.HasField("error")
        assert task.create_time.ToDatetime().year > 2001


def _bad_cases() -> list[tuple[str, task_pb2.Task, str, str]]:
    """(label, task, request_id, the field path the error must name)."""
    ok = "k"
    cases: list[tuple[str, task_pb2.Task, str, str]] = [
        ("no kind", task_pb2.Task(), "", "task.kind"),
        ("long kind", task_pb2.Task(kind="k" * 201), "", "task.kind"),
        ("control char kind", task_pb2.Task(kind="a\nb"), "", "task.kind"),
        ("queue grammar", task_pb2.Task(kind=ok, queue="a/b"), "", "task.queue"),
        ("long queue", task_pb2.Task(kind=ok, queue="q" * 201), "", "task.queue"),
        ("priority 10", task_pb2.Task(kind=ok, priority=10), "", "task.priority"),
        ("priority -1", task_pb2.Task(kind=ok, priority=-1), "", "task.priority"),
        (
            "65 labels",
            task_pb2.Task(kind=ok, labels={f"l{i}": "v" for i in range(65)}),
            "",
            "task.labels",
        ),
        ("long label value", task_pb2.Task(kind=ok, labels={"k": "v" * 256}), "", "task.labels[k]"),
        ("empty label key", task_pb2.Task(kind=ok, labels={"": "v"}), "", "task.labels[]"),
        ("NUL label", task_pb2.Task(kind=ok, labels={"k": "a\x00"}), "", "task.labels[k]"),
        (
            "max_attempts",
            task_pb2.Task(kind=ok, retry_policy=task_pb2.RetryPolicy(max_attempts=-1)),
            "",
            "task.retry_policy.max_attempts",
        ),
        (
            "backoff",
            task_pb2.Task(kind=ok, retry_policy=task_pb2.RetryPolicy(backoff=42)),  # type: ignore[arg-type]
            "",
            "task.retry_policy.backoff",
        ),
        (
            "negative initial_backoff",
            task_pb2.Task(
                kind=ok,
                retry_policy=task_pb2.RetryPolicy(
                    initial_backoff=duration_pb2.Duration(seconds=-1)
                ),
            ),
            "",
            "task.retry_policy.initial_backoff",
        ),
        (
            "max below initial",
            task_pb2.Task(
                kind=ok,
                retry_policy=task_pb2.RetryPolicy(initial_backoff=_ms(5000), max_backoff=_ms(10)),
            ),
            "",
            "task.retry_policy.max_backoff",
        ),
        (
            "short lease",
            task_pb2.Task(kind=ok, lease_duration=_ms(500)),
            "",
            "task.lease_duration",
        ),
        (
            "long lease",
            task_pb2.Task(kind=ok, lease_duration=_ms(25 * 3_600_000)),
            "",
            "task.lease_duration",
        ),
        (
            "bad schedule_time",
            task_pb2.Task(kind=ok, schedule_time=timestamp_pb2.Timestamp(seconds=2**40)),
            "",
            "task.schedule_time",
        ),
        (
            "concurrency_limit",
            task_pb2.Task(kind=ok, concurrency_limit=-2),
            "",
            "task.concurrency_limit",
        ),
        (
            "long concurrency_key",
            task_pb2.Task(kind=ok, concurrency_key="c" * 201),
            "",
            "task.concurrency_key",
        ),
        (
            "approval_timeout without approval",
            task_pb2.Task(kind=ok, approval_timeout=_ms(60_000)),
            "",
            "task.approval_timeout",
        ),
        (
            "approval action without timeout",
            task_pb2.Task(
                kind=ok,
                requires_approval=True,
                approval_timeout_action=enums_pb2.APPROVAL_ACTION_APPROVE,
            ),
            "",
            "task.approval_timeout_action",
        ),
        (
            "long correlation_id",
            task_pb2.Task(kind=ok, correlation_id="c" * 201),
            "",
            "task.correlation_id",
        ),
        ("parent not a name", task_pb2.Task(kind=ok, parent_task="nope"), "", "task.parent_task"),
        (
            "parent in another project",
            task_pb2.Task(kind=ok, parent_task=f"projects/beta/tasks/{uuid.uuid4()}"),
            "",
            "task.parent_task",
        ),
        (
            "parent does not exist",
            task_pb2.Task(kind=ok, parent_task=f"projects/alpha/tasks/{uuid.uuid4()}"),
            "",
            "task.parent_task",
        ),
        (
            "callback_url",
            task_pb2.Task(kind=ok, callback_url="ftp://x.example.com"),
            "",
            "task.callback_url",
        ),
        (
            "long resume_token",
            task_pb2.Task(kind=ok, resume_token="r" * (64 * 1024 + 1)),
            "",
            "task.resume_token",
        ),
        ("long request_id", task_pb2.Task(kind=ok), "r" * 129, "request_id"),
        (
            "dedupe without key",
            task_pb2.Task(kind=ok, dedupe_policy=task_pb2.DedupePolicy(window=_ms(60_000))),
            "",
            "task.dedupe_policy.key",
        ),
    ]
    big = task_pb2.Task(kind=ok)
    big.input.string_value = "x" * (1024 * 1024)
    cases.append(("input over 1 MiB", big, "", "task.input"))
    nul = task_pb2.Task(kind=ok)
    nul.input.struct_value.update({"text": "a\x00b"})
    cases.append(("NUL in input", nul, "", "task.input"))
    nan = task_pb2.Task(kind=ok)
    nan.input.number_value = float("nan")
    cases.append(("NaN input", nan, "", "task.input"))
    return cases


async def test_each_bad_field_is_named_and_nothing_is_written(
    client: AsyncClient, database_url: str
) -> None:
    for label, task, request_id, field in _bad_cases():
        with pytest.raises(InvalidArgumentError) as caught:
            await _create(client, task, request_id)
        fields = [f for f, _ in caught.value.field_violations]
        assert field in fields, (label, caught.value.field_violations)
    assert await _counts(database_url) == (0, 0, 0)


async def test_all_bad_fields_are_reported_at_once(client: AsyncClient, database_url: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        await _create(
            client,
            task_pb2.Task(priority=12, queue="a b", callback_url="nope", labels={"k": "v" * 300}),
        )
    fields = {f for f, _ in caught.value.field_violations}
    assert fields == {
        "task.kind",
        "task.priority",
        "task.queue",
        "task.callback_url",
        "task.labels[k]",
    }
    assert await _counts(database_url) == (0, 0, 0)


async def test_input_of_exactly_the_limit_is_accepted(client: AsyncClient) -> None:
    task = task_pb2.Task(kind="k")
    task.input.string_value = "x" * (1024 * 1024 - 2)  # plus two quotes: 1 MiB of JSON
    created = await _create(client, task)
    assert (await _get(client, created.name)).input.string_value == task.input.string_value


async def test_request_id_returns_the_first_task(
    client: AsyncClient, database_url: str, server: ConveyorServer, admin_key: str
) -> None:
    first = await _create(client, task_pb2.Task(kind="k", priority=2), request_id="req-1")
    # A retry gets the first task and creates nothing; a different body is refused
    # (REQUEST_ID_REUSED, tests/test_request_ids.py).
    again = await _create(client, task_pb2.Task(kind="k", priority=2), request_id="req-1")
    assert _as_read(again) == _as_read(await _get(client, first.name))
    with pytest.raises(AlreadyExistsError):
        await _create(client, task_pb2.Task(kind="other"), request_id="req-1")
    racing = await asyncio.gather(
        *(_create(client, task_pb2.Task(kind="k"), request_id="req-2") for _ in range(20))
    )
    assert len({t.name for t in racing}) == 1
    assert (await _counts(database_url))[0] == 2
    # request_ids are per project: beta's req-1 is another task.
    async with AsyncClient(server.grpc_target, api_key=admin_key) as admin:
        other = await admin.tasks.CreateTask(
            task_service_pb2.CreateTaskRequest(
                parent="projects/beta", task=task_pb2.Task(kind="k"), request_id="req-1"
            )
        )
    assert other.name.startswith("projects/beta/")


async def test_first_use_creates_the_queue_and_its_default_policy_applies(
    client: AsyncClient,
) -> None:
    with pytest.raises(NotFoundError):
        await client.queues.GetQueue(queue_pb2.GetQueueRequest(name="projects/alpha/queues/q1"))
    await _create(client, task_pb2.Task(kind="k", queue="q1"))
    queue = await client.queues.GetQueue(queue_pb2.GetQueueRequest(name="projects/alpha/queues/q1"))
    assert queue.stats.queued == 1

    await client.queues.UpdateQueue(
        queue_pb2.UpdateQueueRequest(
            queue=queue_pb2.Queue(
                name="projects/alpha/queues/q1",
                default_retry_policy=task_pb2.RetryPolicy(
                    max_attempts=9, backoff=enums_pb2.BACKOFF_FIXED
                ),
            )
        )
    )
    inherits = await _create(client, task_pb2.Task(kind="k", queue="q1"))
    overrides = await _create(
        client,
        task_pb2.Task(kind="k", queue="q1", retry_policy=task_pb2.RetryPolicy(max_attempts=2)),
    )
    assert inherits.retry_policy == task_pb2.RetryPolicy(
        max_attempts=9,
        backoff=enums_pb2.BACKOFF_FIXED,
        initial_backoff=_ms(1000),
        max_backoff=_ms(3_600_000),
    )
    assert overrides.retry_policy.max_attempts == 2
    assert overrides.retry_policy.backoff == enums_pb2.BACKOFF_FIXED
    assert _as_read(await _get(client, inherits.name)) == _as_read(inherits)


async def test_create_appends_an_event_and_wakes_the_queue(
    client: AsyncClient, database_url: str
) -> None:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as listener:
        await listener.execute("LISTEN conveyor_tasks")
        later = _at(datetime.now(UTC) + timedelta(hours=1))
        await _create(client, task_pb2.Task(kind="k", queue="sleepy", schedule_time=later))
        created = await _create(client, task_pb2.Task(kind="k", queue="busy"))
        payloads: list[str] = []
        async with asyncio.timeout(5):
            async for note in listener.notifies():
                payloads.append(note.payload)
                break
    # The scheduled task woke nobody; the queued one woke its queue (the payload names
    # the replica too, which skips it: it woke its own workers when it committed).
    assert [p.split("/")[:2] for p in payloads] == [["alpha", "busy"]]

    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cur = await conn.execute(
            "SELECT type, subject, task ->> 'state', task ->> 'id' FROM events"
            " WHERE type LIKE 'task.%%' ORDER BY id"
        )
        rows = await cur.fetchall()
    assert [r[0] for r in rows] == ["task.created", "task.created"]
    assert rows[1][1] == created.name
    assert rows[1][2:] == ("QUEUED", created.name.rsplit("/", 1)[1])


async def test_a_created_event_holds_what_conveyor_task_change_gives_the_new_row(
    client: AsyncClient, database_url: str
) -> None:
    # The insert builds the change of task.created from the columns it sets (0030);
    # it must equal the full conversion of the new row, for every initial state.
    later = _at(datetime.now(UTC) + timedelta(hours=1))
    await _create(client, task_pb2.Task(kind="plain"))
    await _create(client, task_pb2.Task(kind="later", queue="q2", schedule_time=later))
    await _create(
        client,
        task_pb2.Task(
            kind="full",
            priority=2,
            labels={"a": "b"},
            resume_token="tok",
            requires_approval=True,
            retry_policy=task_pb2.RetryPolicy(max_attempts=4),
        ),
        request_id="r-1",
    )
    created = await _create(client, task_pb2.Task(kind="with.input"))
    await client.tasks.BatchCreateTasks(
        task_service_pb2.BatchCreateTasksRequest(
            parent=PARENT,
            requests=[
                task_service_pb2.CreateTaskRequest(
                    task=task_pb2.Task(kind="child", parent_task=created.name)
                ),
                task_service_pb2.CreateTaskRequest(task=task_pb2.Task(kind="batched")),
            ],
        )
    )
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cur = await conn.execute(
            "SELECT e.task, conveyor_task_change(t, true) FROM events e"
            " JOIN tasks t ON e.subject = 'projects/' || t.project || '/tasks/' || t.id"
            " WHERE e.type = 'task.created' ORDER BY e.id"
        )
        rows = await cur.fetchall()
    assert len(rows) == 6
    for event_change, full_change in rows:
        assert event_change == full_change


async def test_concurrent_creates_share_statements(client: AsyncClient, database_url: str) -> None:
    tasks = await asyncio.gather(
        *(_create(client, task_pb2.Task(kind=f"k{i}")) for i in range(200))
    )
    assert len({t.name for t in tasks}) == 200
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cur = await conn.execute(
            "SELECT count(*), count(DISTINCT xid) FROM events WHERE type = 'task.created'"
        )
        row = await cur.fetchone()
    assert row is not None
    created, commits = row
    assert created == 200
    assert commits < 200  # coalesced: fewer commits than creates


async def test_a_failing_item_does_not_fail_its_batch(database_url: str) -> None:
    """The batcher's fallback: a statement error splits the batch; only the bad item fails."""
    ids = TaskIds()
    good = [
        new_task(task_pb2.Task(kind="k"), project="default", request_id="", ids=ids)
        for _ in range(3)
    ]
    # Bypasses validation to reach the database's CHECK constraint.
    bad = new_task(task_pb2.Task(kind="k"), project="default", request_id="", ids=ids)
    object.__setattr__(bad, "priority", 42)
    async with AsyncConnectionPool(
        database_url, min_size=1, max_size=2, kwargs={"autocommit": True}, open=False
    ) as pool:
        batcher = CreateBatcher(pool)
        results: list[Any] = await asyncio.gather(
            *(batcher.create(item) for item in [good[0], bad, *good[1:]]),
            return_exceptions=True,
        )
        await batcher.stop()
    assert isinstance(results[1], psycopg.errors.CheckViolation)
    assert [r.outcome for i, r in enumerate(results) if i != 1] == [Outcome.CREATED] * 3
    assert (await _counts(database_url))[0] == 3


async def test_a_bad_parent_in_a_shared_flush_fails_only_its_caller(
    client: AsyncClient, database_url: str
) -> None:
    missing = f"projects/alpha/tasks/{uuid.uuid4()}"
    results = await asyncio.gather(
        *(
            _create(client, task_pb2.Task(kind="k", parent_task=missing if i == 5 else ""))
            for i in range(10)
        ),
        return_exceptions=True,
    )
    assert isinstance(results[5], InvalidArgumentError)
    assert results[5].field_violations[0][0] == "task.parent_task"
    assert sum(isinstance(r, task_pb2.Task) for r in results) == 9
    assert (await _counts(database_url))[0] == 9


def test_the_insert_statement_stays_in_psycopgs_parse_cache() -> None:
    # psycopg re-parses statements longer than this on every call (_queries.py).
    assert len(INSERT_STATEMENT) <= 4096


async def test_the_insert_plan_builds_created_events_inline(database_url: str) -> None:
    """conveyor_task_created is inlined into the insert's plan (0036), not called as a SQL
    function per task.created row, which PostgreSQL does for a function declared
    IMMUTABLE whose body is only STABLE."""
    names: dict[str, str] = {}
    statement = re.sub(
        r"%\((\w+)\)s", lambda m: names.setdefault(m[1], f"${len(names) + 1}"), INSERT_STATEMENT
    )
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        cur = await conn.execute("EXPLAIN (GENERIC_PLAN, VERBOSE) " + statement)
        plan = "\n".join(row[0] for row in await cur.fetchall())
    assert "jsonb_build_object" in plan
    # Inlined, its name is left only as the subquery column it fills.
    assert "conveyor_task_created(" not in plan


def test_task_ids_are_time_ordered_and_strictly_increasing() -> None:
    clock = iter([1000, 1000, 999, 1001] + [1001] * 5000)
    ids = TaskIds(lambda: next(clock))
    made = [ids.next() for _ in range(5004)]
    values = [m[0] for m in made]
    assert values == sorted(values) and len(set(values)) == len(values)
    # The clock going back never makes an id go back; a full counter borrows a millisecond.
    assert made[2][1] == made[0][1] == datetime.fromtimestamp(1.0, UTC)
    assert made[-1][1] > datetime.fromtimestamp(1.001, UTC)
    assert all(create_time_of(i) == t for i, t in made)
