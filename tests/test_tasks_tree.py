"""GetTaskTree: the root and its descendants, parents first, cut at 500."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import psycopg
import pytest
import pytest_asyncio

from conveyor.client import AsyncClient, NotFoundError
from conveyor.server.app import ConveyorServer
from conveyor.v1 import task_pb2, task_service_pb2

PARENT = "projects/alpha"


@pytest_asyncio.fixture
async def client(server: ConveyorServer, keys: dict[str, str]) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(server.grpc_target, api_key=keys["operator"]) as c:
        yield c


async def _create(client: AsyncClient, parent_task: str = "") -> task_pb2.Task:
    return await client.tasks.CreateTask(
        task_service_pb2.CreateTaskRequest(
            parent=PARENT, task=task_pb2.Task(kind="k", parent_task=parent_task)
        )
    )


async def _tree(client: AsyncClient, name: str) -> task_service_pb2.TaskTree:
    return await client.tasks.GetTaskTree(task_service_pb2.GetTaskTreeRequest(name=name))


async def test_three_levels_from_any_member(client: AsyncClient) -> None:
    root = await _create(client)
    a = await _create(client, root.name)
    b = await _create(client, root.name)
    a1 = await _create(client, a.name)
    b1 = await _create(client, b.name)
    other = await _create(client)
    for member in (root, a, b1):
        tree = await _tree(client, member.name)
        names = [t.name for t in tree.tasks]
        assert names[0] == root.name
        assert set(names) == {root.name, a.name, b.name, a1.name, b1.name}
        assert other.name not in names
        assert not tree.truncated
        position = {n: i for i, n in enumerate(names)}
        for task in tree.tasks[1:]:
            assert position[task.parent_task] < position[task.name]
            assert task.root_task == root.name


async def test_a_tree_over_500_is_truncated(client: AsyncClient, database_url: str) -> None:
    root = await _create(client)
    root_id = uuid.UUID(root.name.rsplit("/", 1)[1])
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await conn.execute(
            "INSERT INTO tasks (project, id, queue, kind, state, end_time, root_task, parent_task)"
            " SELECT 'alpha', id, 'default', 'k', 'CANCELLED', now(), %(root)s, %(root)s"
            " FROM unnest(%(ids)s::uuid[]) AS id",
            # Larger than the root's id, as a child's UUIDv7 is.
            {"ids": [uuid.UUID(int=root_id.int + i) for i in range(1, 601)], "root": root_id},
        )
    tree = await _tree(client, root.name)
    assert tree.truncated
    assert len(tree.tasks) == 500
    assert tree.tasks[0].name == root.name


async def test_unknown_task_is_not_found(client: AsyncClient) -> None:
    with pytest.raises(NotFoundError):
        await _tree(client, f"{PARENT}/tasks/{uuid.UUID(int=1)}")
