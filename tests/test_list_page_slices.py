"""ListTasks builds a page a slice at a time, letting the replica's other calls run between
slices (issue 21: one key's flood of pages must not hold every other caller's calls)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest_asyncio
from google.protobuf import struct_pb2

from conveyor.client import AsyncClient
from conveyor.server.app import ConveyorServer
from conveyor.server.domain.tasks import PAGE_SLICE, Tasks
from conveyor.server.store.db import Pool
from conveyor.server.store.task_batcher import CreateBatcher
from conveyor.server.store.task_rows import TaskRow
from conveyor.v1 import enums_pb2, task_pb2, task_service_pb2

PARENT = "projects/alpha"


def _input(i: int) -> struct_pb2.Value:
    value = struct_pb2.Value()
    value.struct_value.update({"i": i})
    return value


@pytest_asyncio.fixture
async def client(server: ConveyorServer, keys: dict[str, str]) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(server.grpc_target, api_key=keys["operator"]) as c:
        yield c


async def test_a_page_is_built_in_slices_between_other_calls(
    client: AsyncClient, pool: Pool
) -> None:
    await client.tasks.BatchCreateTasks(
        task_service_pb2.BatchCreateTasksRequest(
            parent=PARENT,
            requests=[
                task_service_pb2.CreateTaskRequest(task=task_pb2.Task(kind="k", input=_input(i)))
                for i in range(101)
            ],
        )
    )
    tasks = Tasks(pool, CreateBatcher(pool))
    turns = 0

    async def other_call() -> None:
        # Stands for the other calls on the event loop: one step each time it runs.
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    seen: list[int] = []

    def size_of(row: TaskRow, blocked: str | None) -> int:
        seen.append(turns)
        return 1

    for view in (enums_pb2.TASK_VIEW_FULL, enums_pb2.TASK_VIEW_BASIC):
        seen.clear()
        running = asyncio.create_task(other_call())
        try:
            request = task_service_pb2.ListTasksRequest(parent=PARENT, page_size=100, view=view)
            rows, token = await tasks.list_page(request, size_of)
        finally:
            running.cancel()
        assert len(rows) == 100 and token
        assert (rows[0].input is None) == (view == enums_pb2.TASK_VIEW_BASIC)
        # The other call ran between every two slices, never inside one.
        assert len(set(seen)) == 100 // PAGE_SLICE
        assert seen == sorted(seen)


async def test_a_page_reads_input_and_labels_as_get_task_does(client: AsyncClient) -> None:
    # A page decodes jsonb with its own loader (store.task_rows.JsonbLoader).
    value = struct_pb2.Value()
    value.struct_value.update(
        {
            "text": 'é \u2028 😀 "quoted" \\ back',
            "numbers": [0, -0.5, 1e300, 12345678901234],
            "nested": {"empty": {}, "list": [], "none": None, "yes": True},
        }
    )
    created = await client.tasks.CreateTask(
        task_service_pb2.CreateTaskRequest(
            parent=PARENT, task=task_pb2.Task(kind="k", input=value, labels={"a": "b é"})
        )
    )
    got = await client.tasks.GetTask(task_service_pb2.GetTaskRequest(name=created.name))
    page = await client.tasks.ListTasks(task_service_pb2.ListTasksRequest(parent=PARENT))
    assert [t.name for t in page.tasks] == [created.name]
    assert page.tasks[0].input == got.input == value
    assert dict(page.tasks[0].labels) == dict(got.labels) == {"a": "b é"}
