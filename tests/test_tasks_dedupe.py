"""dedupe_policy on CreateTask and BatchCreateTasks: each on_conflict mode, races, expiry."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
import pytest_asyncio
from google.protobuf import duration_pb2

from conveyor.client import AlreadyExistsError, AsyncClient, InvalidArgumentError
from conveyor.server.app import ConveyorServer
from conveyor.v1 import enums_pb2, schedule_pb2, task_pb2, task_service_pb2

PARENT = "projects/alpha"


@pytest_asyncio.fixture
async def client(server: ConveyorServer, keys: dict[str, str]) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(server.grpc_target, api_key=keys["operator"]) as c:
        yield c


def _task(
    key: str,
    on_conflict: int = enums_pb2.ON_CONFLICT_UNSPECIFIED,
    value: str = "",
    window_s: float | None = None,
    **fields: object,
) -> task_pb2.Task:
    policy = task_pb2.DedupePolicy(key=key, on_conflict=on_conflict)  # type: ignore[arg-type]
    if window_s is not None:
        policy.window.FromTimedelta(timedelta(seconds=window_s))
    task = task_pb2.Task(kind="k", dedupe_policy=policy, **fields)  # type: ignore[arg-type]
    if value:
        task.input.string_value = value
    return task


async def _create(client: AsyncClient, task: task_pb2.Task) -> task_pb2.Task:
    return await client.tasks.CreateTask(
        task_service_pb2.CreateTaskRequest(parent=PARENT, task=task)
    )


async def _count(database_url: str, sql: str = "SELECT count(*) FROM tasks") -> int:
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cur = await conn.execute(sql)
        row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def _events(database_url: str, name: str) -> list[str]:
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cur = await conn.execute("SELECT type FROM events WHERE subject = %s ORDER BY id", (name,))
        return [r[0] for r in await cur.fetchall()]


async def test_return_existing_is_the_default(client: AsyncClient, database_url: str) -> None:
    first = await _create(client, _task("a", value="one"))
    again = await _create(client, _task("a", value="two"))
    assert again.name == first.name
    assert again.input.string_value == "one"
    explicit = await _create(client, _task("a", enums_pb2.ON_CONFLICT_RETURN_EXISTING))
    assert explicit.name == first.name
    other = await _create(client, _task("b"))
    assert other.name != first.name
    assert await _count(database_url) == 2


async def test_reject_names_the_holder(client: AsyncClient, database_url: str) -> None:
    first = await _create(client, _task("r"))
    with pytest.raises(AlreadyExistsError) as caught:
        await _create(client, _task("r", enums_pb2.ON_CONFLICT_REJECT))
    assert caught.value.metadata["task"] == first.name
    assert await _count(database_url) == 1


async def test_replace_input_updates_a_waiting_holder(
    client: AsyncClient, database_url: str
) -> None:
    first = await _create(client, _task("p", value="one"))
    replaced = await _create(client, _task("p", enums_pb2.ON_CONFLICT_REPLACE_INPUT, "two"))
    assert replaced.name == first.name
    assert replaced.input.string_value == "two"
    got = await client.tasks.GetTask(task_service_pb2.GetTaskRequest(name=first.name))
    assert got.input.string_value == "two"
    assert got.state == enums_pb2.TASK_STATE_QUEUED
    assert await _events(database_url, first.name) == ["task.created", "task.updated"]
    assert await _count(database_url) == 1


async def test_replace_input_leaves_a_started_task_alone(
    client: AsyncClient, database_url: str, keys: dict[str, str]
) -> None:
    first = await _create(client, _task("s", value="one"))
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await conn.execute(
            "UPDATE tasks SET state = 'RUNNING', attempt = 1, worker = 'w1',"
            " lease_id = gen_random_uuid(), lease_expire_time = now() + interval '1 minute',"
            " start_time = now() WHERE id = %s",
            (first.name.rsplit("/", 1)[1],),
        )
    again = await _create(client, _task("s", enums_pb2.ON_CONFLICT_REPLACE_INPUT, "two"))
    assert again.name == first.name
    assert again.input.string_value == "one"
    assert again.state == enums_pb2.TASK_STATE_RUNNING
    debounced = await _create(client, _task("s", enums_pb2.ON_CONFLICT_DEBOUNCE, "three"))
    assert debounced.input.string_value == "one"
    assert await _events(database_url, first.name) == ["task.created"]


async def test_debounce_replaces_input_and_delays(client: AsyncClient, database_url: str) -> None:
    first = await _create(client, _task("d", value="one", window_s=60))
    before = datetime.now(UTC)
    later = await _create(client, _task("d", enums_pb2.ON_CONFLICT_DEBOUNCE, "two", window_s=60))
    assert later.name == first.name
    assert later.input.string_value == "two"
    assert later.state == enums_pb2.TASK_STATE_SCHEDULED
    pushed = later.schedule_time.ToDatetime(tzinfo=UTC)
    assert before + timedelta(seconds=55) < pushed < before + timedelta(seconds=65)
    assert await _count(database_url) == 1


async def test_concurrent_creates_with_one_key_make_one_task(
    client: AsyncClient, database_url: str
) -> None:
    answers = await asyncio.gather(*(_create(client, _task("race")) for _ in range(50)))
    assert len({a.name for a in answers}) == 1
    assert await _count(database_url) == 1


async def test_key_expires_after_its_window(client: AsyncClient, database_url: str) -> None:
    first = await _create(client, _task("e", window_s=1))
    assert (await _create(client, _task("e", window_s=1))).name == first.name
    await asyncio.sleep(1.2)
    second = await _create(client, _task("e", window_s=1))
    assert second.name != first.name
    assert (await _create(client, _task("e", window_s=1))).name == second.name
    assert await _count(database_url) == 2


async def test_deleting_the_holder_frees_its_key(client: AsyncClient, database_url: str) -> None:
    first = await _create(client, _task("del"))
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await conn.execute("DELETE FROM tasks WHERE id = %s", (first.name.rsplit("/", 1)[1],))
    second = await _create(client, _task("del"))
    assert second.name != first.name


async def test_a_schedule_template_dedupe_policy_returns_the_holder(
    client: AsyncClient, database_url: str
) -> None:
    from conveyor.server.domain.schedule_tasks import ScheduledTasks

    template = schedule_pb2.TaskTemplate(kind="k", dedupe_policy=task_pb2.DedupePolicy(key="s"))
    tasks = ScheduledTasks()
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        ids = [
            await tasks.create_scheduled(
                conn,
                project="alpha",
                template=template,
                schedule="projects/alpha/schedules/s1",
                schedule_time=datetime.now(UTC),
                occurrence=str(n),
            )
            for n in range(2)
        ]
        await conn.commit()
    assert ids[0] == ids[1]
    assert await _count(database_url) == 1


async def test_batch_reports_a_dedupe_hit_as_existing_task(
    client: AsyncClient, database_url: str
) -> None:
    held = await _create(client, _task("held"))
    response = await client.tasks.BatchCreateTasks(
        task_service_pb2.BatchCreateTasksRequest(
            parent=PARENT,
            requests=[
                task_service_pb2.CreateTaskRequest(task=_task("x")),
                task_service_pb2.CreateTaskRequest(task=task_pb2.Task(kind="plain")),
                task_service_pb2.CreateTaskRequest(task=_task("x")),
                task_service_pb2.CreateTaskRequest(task=_task("held")),
                task_service_pb2.CreateTaskRequest(
                    task=_task("held", enums_pb2.ON_CONFLICT_REJECT)
                ),
            ],
        )
    )
    kinds = [r.WhichOneof("result") for r in response.results]
    assert kinds == ["task", "task", "existing_task", "existing_task", "status"]
    assert response.results[2].existing_task.name == response.results[0].task.name
    assert response.results[3].existing_task.name == held.name
    assert response.results[4].status.code == 6  # ALREADY_EXISTS
    assert await _count(database_url) == 3


@pytest.mark.parametrize(
    ("policy", "field"),
    [
        (task_pb2.DedupePolicy(), "task.dedupe_policy.key"),
        (task_pb2.DedupePolicy(key="k" * 201), "task.dedupe_policy.key"),
        (
            task_pb2.DedupePolicy(key="k", window=duration_pb2.Duration(nanos=5_000_000)),
            "task.dedupe_policy.window",
        ),
        (
            task_pb2.DedupePolicy(key="k", window=duration_pb2.Duration(seconds=31 * 86400)),
            "task.dedupe_policy.window",
        ),
    ],
)
async def test_bad_policy_is_invalid(
    client: AsyncClient, database_url: str, policy: task_pb2.DedupePolicy, field: str
) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        await _create(client, task_pb2.Task(kind="k", dedupe_policy=policy))
    assert [f for f, _ in caught.value.field_violations] == [field]
    assert await _count(database_url) == 0
    assert await _count(database_url, "SELECT count(*) FROM task_dedupe_keys") == 0
