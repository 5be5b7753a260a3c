"""Reports answered the same however they spell what the server pushed.

A batched Connect stream takes the task and lease of a report naming both exactly as it
pushed them from what it remembers (rpc/report_acks.Pushed) instead of parsing them;
every other spelling is parsed as before, and every report frees its slot either way.
A result is written compactly, yet its size limit still counts json.dumps' spelling.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest_asyncio
from google.protobuf import json_format
from test_workers_batches import (  # type: ignore[import-not-found]
    FAILED_PRECONDITION,
    INVALID_ARGUMENT,
    OK,
    PARENT,
    Stream,
    auth,
    complete,
    create_task,
    get_state,
    leases_of,
)

from conveyor.server.app import ConveyorServer
from conveyor.server.domain.leases import MAX_RESULT_BYTES
from conveyor.v1 import (
    enums_pb2,
    task_service_pb2,
    task_service_pb2_grpc,
    worker_pb2,
    worker_pb2_grpc,
)

S = enums_pb2


@pytest_asyncio.fixture
async def channel(server: ConveyorServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(server.grpc_target) as ch:
        yield ch


async def test_reports_spelled_otherwise_than_pushed_are_answered_as_before(
    server: ConveyorServer, keys: dict[str, str], channel: grpc.aio.Channel
) -> None:
    tasks: task_service_pb2_grpc.TaskServiceAsyncStub = task_service_pb2_grpc.TaskServiceStub(
        channel
    )
    workers: worker_pb2_grpc.WorkerServiceAsyncStub = worker_pb2_grpc.WorkerServiceStub(channel)
    for _ in range(4):
        await create_task(tasks, keys["operator"])
    stream = Stream(workers, keys["worker"])
    await stream.hello(batches=True)
    await stream.send(credit=worker_pb2.Credit(tasks=4))
    a, b, c, d = await leases_of(stream, 4)
    for _ in range(4):
        await create_task(tasks, keys["operator"])

    upper_lease = complete(b)
    upper_lease.lease_id = b.lease_id.upper()
    wrong_name = complete(c)
    wrong_name.name = d.task.name  # c's lease, d's name: d's lease differs
    upper_name = complete(d)
    upper_name.name = d.task.name.rsplit("/", 1)[0] + "/" + d.task.name.rsplit("/", 1)[1].upper()
    batch = worker_pb2.ReportBatch(completes=[complete(a), upper_lease, wrong_name, upper_name])
    await stream.send(reports=batch)
    acks = (await stream.recv()).report_acks.acks
    assert [x.lease_id for x in acks] == [a.lease_id, b.lease_id.upper(), c.lease_id, d.lease_id]
    assert [x.status.code for x in acks] == [OK, OK, FAILED_PRECONDITION, OK]
    key = keys["viewer"]
    for lease, state in ((a, S.TASK_STATE_SUCCEEDED), (b, S.TASK_STATE_SUCCEEDED)):
        assert await get_state(tasks, key, lease.task.name) == state
    assert await get_state(tasks, key, c.task.name) == S.TASK_STATE_RUNNING
    assert await get_state(tasks, key, d.task.name) == S.TASK_STATE_SUCCEEDED

    # Each report freed its slot, the refused one too: the next four come at once.
    more = await leases_of(stream, 4)
    assert not {x.task.name for x in more} & {a.task.name, b.task.name, c.task.name}
    # c, reported as pushed after its slot was freed, is parsed and accepted.
    await stream.send(reports=worker_pb2.ReportBatch(completes=[complete(c), *map(complete, more)]))
    acks = (await stream.recv()).report_acks.acks
    assert [x.status.code for x in acks] == [OK] * 5
    assert await get_state(tasks, key, c.task.name) == S.TASK_STATE_SUCCEEDED
    await stream.close()
    assert stream.error is None


async def test_a_result_is_stored_compactly_and_limited_as_json_dumps_spells_it(
    server: ConveyorServer, keys: dict[str, str], channel: grpc.aio.Channel
) -> None:
    tasks: task_service_pb2_grpc.TaskServiceAsyncStub = task_service_pb2_grpc.TaskServiceStub(
        channel
    )
    workers: worker_pb2_grpc.WorkerServiceAsyncStub = worker_pb2_grpc.WorkerServiceStub(channel)
    for _ in range(2):
        await create_task(tasks, keys["operator"])
    leased = await workers.LeaseTasks(
        worker_pb2.LeaseTasksRequest(
            parent=PARENT, worker=f"{PARENT}/workers/u1", queues=["q"], max_tasks=2
        ),
        metadata=auth(keys["worker"]),
    )
    small, large = leased.leases
    value = {"a": [1, 2.5, "x", None, {"b": False}], "é": "ü\U0001f600", "n": -7}
    kept = worker_pb2.CompleteTaskRequest(name=small.task.name, lease_id=small.lease_id)
    json_format.ParseDict(value, kept.result)
    # ~0.2 MiB of UTF-8, over 1 MiB as json.dumps writes it (each é as \u00e9).
    over = worker_pb2.CompleteTaskRequest(name=large.task.name, lease_id=large.lease_id)
    over.result.string_value = "é" * (MAX_RESULT_BYTES // 6 + 1)
    answer = await workers.ReportTasks(
        worker_pb2.ReportTasksRequest(parent=PARENT, completes=[kept, over], ack_tasks=True),
        metadata=auth(keys["worker"]),
    )
    assert [x.status.code for x in answer.acks] == [OK, INVALID_ARGUMENT]
    assert "result" in answer.acks[1].status.message
    done = await tasks.GetTask(
        task_service_pb2.GetTaskRequest(name=small.task.name), metadata=auth(keys["viewer"])
    )
    assert json_format.MessageToDict(done.result) == value
    assert await get_state(tasks, keys["viewer"], large.task.name) == S.TASK_STATE_RUNNING
