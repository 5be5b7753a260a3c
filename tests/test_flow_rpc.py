"""Flow control through the API: a rate-limited LeaseTasks answers RESOURCE_EXHAUSTED with
RetryInfo (or waits for the next token), and UpdateQueue's limits apply at once."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from google.protobuf import duration_pb2, field_mask_pb2

from conveyor.client import AsyncClient, ResourceExhaustedError
from conveyor.server.app import ConveyorServer
from conveyor.v1 import enums_pb2, queue_pb2, task_pb2, task_service_pb2, worker_pb2

PARENT = "projects/alpha"


@pytest_asyncio.fixture
async def operator(server: ConveyorServer, keys: dict[str, str]) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(server.grpc_target, api_key=keys["operator"]) as c:
        yield c


@pytest_asyncio.fixture
async def worker(server: ConveyorServer, keys: dict[str, str]) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(server.grpc_target, api_key=keys["worker"]) as c:
        yield c


async def create(client: AsyncClient, queue: str, n: int) -> None:
    for _ in range(n):
        await client.tasks.CreateTask(
            task_service_pb2.CreateTaskRequest(
                parent=PARENT, task=task_pb2.Task(queue=queue, kind="k")
            )
        )


async def update_queue(client: AsyncClient, queue: str, **fields: object) -> None:
    await client.queues.UpdateQueue(
        queue_pb2.UpdateQueueRequest(
            queue=queue_pb2.Queue(name=f"{PARENT}/queues/{queue}", **fields),  # type: ignore[arg-type]
            update_mask=field_mask_pb2.FieldMask(paths=list(fields)),
        )
    )


def lease(queue: str, wait: float = 0.0, n: int = 5) -> worker_pb2.LeaseTasksRequest:
    return worker_pb2.LeaseTasksRequest(
        parent=PARENT,
        worker=f"{PARENT}/workers/w1",
        queues=[queue],
        max_tasks=n,
        wait_timeout=duration_pb2.Duration(seconds=int(wait), nanos=int(wait % 1 * 1e9)),
    )


async def test_rate_limited_lease_gets_retry_info(
    operator: AsyncClient, worker: AsyncClient
) -> None:
    await create(operator, "slow", 3)
    await update_queue(operator, "slow", rate_limit="1/s")
    first = await worker.workers.LeaseTasks(lease("slow"))
    assert len(first.leases) == 1
    with pytest.raises(ResourceExhaustedError) as caught:
        await worker.workers.LeaseTasks(lease("slow"))
    assert caught.value.reason == "RATE_LIMITED"
    assert caught.value.retry_after is not None
    assert 0 < caught.value.retry_after.total_seconds() <= 1.0
    # With a wait, the call waits for the next token instead.
    start = time.monotonic()
    waited = await worker.workers.LeaseTasks(lease("slow", wait=3.0))
    assert len(waited.leases) == 1
    assert 0.3 < time.monotonic() - start < 1.5


async def test_sequential_queue_leases_the_next_when_one_ends(
    operator: AsyncClient, worker: AsyncClient
) -> None:
    await update_queue(operator, "seq", max_concurrency=1)
    await create(operator, "seq", 2)
    first = await worker.workers.LeaseTasks(lease("seq"))
    assert len(first.leases) == 1
    empty = await worker.workers.LeaseTasks(lease("seq"))
    assert list(empty.leases) == []
    await worker.workers.CompleteTask(
        worker_pb2.CompleteTaskRequest(
            name=first.leases[0].task.name, lease_id=first.leases[0].lease_id
        )
    )
    second = await worker.workers.LeaseTasks(lease("seq"))
    assert len(second.leases) == 1
    assert second.leases[0].task.name != first.leases[0].task.name


async def test_blocked_reason_names_the_limit(operator: AsyncClient, worker: AsyncClient) -> None:
    await update_queue(operator, "slow", rate_limit="1/h")
    await create(operator, "slow", 2)
    assert len((await worker.workers.LeaseTasks(lease("slow"))).leases) == 1
    waiting = [t async for t in list_queued(operator)]
    (task,) = [t for t in waiting if t.queue == "slow"]
    got = await operator.tasks.GetTask(task_service_pb2.GetTaskRequest(name=task.name))
    assert got.blocked_reason == enums_pb2.BLOCKED_REASON_RATE_LIMITED

    keyed = [
        await operator.tasks.CreateTask(
            task_service_pb2.CreateTaskRequest(
                parent=PARENT,
                task=task_pb2.Task(queue="keyed", kind="k", concurrency_key="acct-1"),
            )
        )
        for _ in range(2)
    ]
    assert len((await worker.workers.LeaseTasks(lease("keyed"))).leases) == 1
    states = {
        t.name: t
        for t in [
            await operator.tasks.GetTask(task_service_pb2.GetTaskRequest(name=k.name))
            for k in keyed
        ]
    }
    (queued,) = [t for t in states.values() if t.state == enums_pb2.TASK_STATE_QUEUED]
    assert queued.blocked_reason == enums_pb2.BLOCKED_REASON_CONCURRENCY_LIMITED


async def list_queued(client: AsyncClient) -> AsyncIterator[task_pb2.Task]:
    page = await client.tasks.ListTasks(
        task_service_pb2.ListTasksRequest(
            parent=PARENT, filter=task_pb2.TaskFilter(states=[enums_pb2.TASK_STATE_QUEUED])
        )
    )
    for t in page.tasks:
        yield t
