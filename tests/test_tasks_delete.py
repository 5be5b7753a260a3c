"""BatchDeleteTasks: terminal tasks only, by names or by filter, admin role, audited."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import psycopg
import pytest
import pytest_asyncio

from conveyor.client import (
    AsyncClient,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
)
from conveyor.server.app import ConveyorServer
from conveyor.v1 import enums_pb2, task_pb2, task_service_pb2

PARENT = "projects/alpha"


@pytest_asyncio.fixture
async def admin(server: ConveyorServer, keys: dict[str, str]) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(server.grpc_target, api_key=keys["admin"]) as c:
        yield c


async def _create(client: AsyncClient, kind: str = "k", *, cancelled: bool) -> str:
    task = await client.tasks.CreateTask(
        task_service_pb2.CreateTaskRequest(parent=PARENT, task=task_pb2.Task(kind=kind))
    )
    if cancelled:
        await client.tasks.CancelTask(task_service_pb2.CancelTaskRequest(name=task.name))
    return task.name


async def _exists(client: AsyncClient, name: str) -> bool:
    listed = await client.tasks.ListTasks(
        task_service_pb2.ListTasksRequest(parent=PARENT, page_size=1000)
    )
    return name in {t.name for t in listed.tasks}


async def _audit(database_url: str) -> list[tuple[str, dict[str, int]]]:
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cur = await conn.execute(
            "SELECT verb, args FROM commands WHERE verb = 'BATCH_DELETE_TASKS' ORDER BY sequence"
        )
        return list(await cur.fetchall())


async def test_delete_by_names_skips_the_unfinished(admin: AsyncClient, database_url: str) -> None:
    done = [await _create(admin, cancelled=True) for _ in range(3)]
    waiting = await _create(admin, cancelled=False)
    unknown = f"{PARENT}/tasks/{uuid.UUID(int=7)}"
    answer = await admin.tasks.BatchDeleteTasks(
        task_service_pb2.BatchDeleteTasksRequest(parent=PARENT, names=[*done, waiting, unknown])
    )
    assert answer.deleted_count == 3
    assert list(answer.skipped) == [waiting]
    for name in done:
        assert not await _exists(admin, name)
    assert await _exists(admin, waiting)
    assert await _audit(database_url) == [
        ("BATCH_DELETE_TASKS", {"by": "names", "requested": 5, "deleted": 3, "skipped": 1})
    ]


async def test_delete_by_filter_takes_only_terminal_matches(admin: AsyncClient) -> None:
    gone = [await _create(admin, "old", cancelled=True) for _ in range(2)]
    kept_other_kind = await _create(admin, "new", cancelled=True)
    kept_waiting = await _create(admin, "old", cancelled=False)
    answer = await admin.tasks.BatchDeleteTasks(
        task_service_pb2.BatchDeleteTasksRequest(
            parent=PARENT, filter=task_pb2.TaskFilter(kinds=["old"])
        )
    )
    assert answer.deleted_count == 2
    assert list(answer.skipped) == []
    for name in gone:
        assert not await _exists(admin, name)
    assert await _exists(admin, kept_other_kind)
    assert await _exists(admin, kept_waiting)
    # A filter asking only for non-terminal states deletes nothing.
    answer = await admin.tasks.BatchDeleteTasks(
        task_service_pb2.BatchDeleteTasksRequest(
            parent=PARENT, filter=task_pb2.TaskFilter(states=[enums_pb2.TASK_STATE_QUEUED])
        )
    )
    assert answer.deleted_count == 0
    assert await _exists(admin, kept_waiting)


async def test_delete_by_filter_takes_at_most_1000(admin: AsyncClient, database_url: str) -> None:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await conn.execute(
            "INSERT INTO tasks (project, id, queue, kind, state, end_time, root_task)"
            " SELECT 'alpha', id, 'default', 'bulk', 'SUCCEEDED', now(), id"
            " FROM (SELECT gen_random_uuid() AS id FROM generate_series(1, 1005)) AS ids"
        )
    request = task_service_pb2.BatchDeleteTasksRequest(
        parent=PARENT, filter=task_pb2.TaskFilter(kinds=["bulk"])
    )
    assert (await admin.tasks.BatchDeleteTasks(request)).deleted_count == 1000
    assert (await admin.tasks.BatchDeleteTasks(request)).deleted_count == 5


@pytest.mark.parametrize(
    "request_",
    [
        task_service_pb2.BatchDeleteTasksRequest(parent=PARENT),
        task_service_pb2.BatchDeleteTasksRequest(
            parent=PARENT,
            names=[f"{PARENT}/tasks/{uuid.UUID(int=1)}"],
            filter=task_pb2.TaskFilter(),
        ),
        task_service_pb2.BatchDeleteTasksRequest(parent=PARENT, names=["nope"]),
        task_service_pb2.BatchDeleteTasksRequest(
            parent=PARENT, names=[f"{PARENT}/tasks/{uuid.UUID(int=1)}"] * 1001
        ),
    ],
)
async def test_bad_requests_are_invalid(
    admin: AsyncClient, request_: task_service_pb2.BatchDeleteTasksRequest
) -> None:
    with pytest.raises(InvalidArgumentError):
        await admin.tasks.BatchDeleteTasks(request_)


async def test_delete_needs_the_admin_role(server: ConveyorServer, keys: dict[str, str]) -> None:
    async with AsyncClient(server.grpc_target, api_key=keys["operator"]) as ops:
        with pytest.raises(PermissionDeniedError):
            await ops.tasks.BatchDeleteTasks(
                task_service_pb2.BatchDeleteTasksRequest(
                    parent=PARENT, filter=task_pb2.TaskFilter()
                )
            )


async def test_unknown_project_is_not_found(server: ConveyorServer, admin_key: str) -> None:
    async with AsyncClient(server.grpc_target, api_key=admin_key) as system:
        with pytest.raises(NotFoundError):
            await system.tasks.BatchDeleteTasks(
                task_service_pb2.BatchDeleteTasksRequest(
                    parent="projects/nowhere", filter=task_pb2.TaskFilter()
                )
            )
