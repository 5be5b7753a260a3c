"""Batched worker messages: LeaseBatch, ReportBatch, ReportAckBatch and ReportTasks.

Each item of a batch is fenced and answered on its own; the single-message forms stay
valid beside them (test_workers.py covers those).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
import httpx
import pytest
import pytest_asyncio
from google.protobuf import field_mask_pb2, json_format

from conveyor.client import AsyncClient, TaskContext, Worker
from conveyor.server.app import ConveyorServer
from conveyor.server.store import leases
from conveyor.server.store.db import Pool
from conveyor.server.store.task_rows import json_value
from conveyor.v1 import (
    enums_pb2,
    queue_pb2,
    queue_pb2_grpc,
    task_pb2,
    task_service_pb2,
    task_service_pb2_grpc,
    worker_pb2,
    worker_pb2_grpc,
)

S = enums_pb2
PARENT = "projects/alpha"
OK = 0
FAILED_PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION.value[0]
PERMISSION_DENIED = grpc.StatusCode.PERMISSION_DENIED.value[0]
INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT.value[0]


def auth(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)


async def create_task(
    tasks: task_service_pb2_grpc.TaskServiceAsyncStub, key: str, queue: str = "q"
) -> task_pb2.Task:
    request = task_service_pb2.CreateTaskRequest(
        parent=PARENT, task=task_pb2.Task(queue=queue, kind="test.kind")
    )
    task: task_pb2.Task = await tasks.CreateTask(request, metadata=auth(key))
    return task


class Stream:
    """A raw Connect stream whose responses a background reader queues."""

    def __init__(self, stub: worker_pb2_grpc.WorkerServiceAsyncStub, key: str) -> None:
        self.call = stub.Connect(metadata=auth(key))
        self.responses: asyncio.Queue[worker_pb2.ConnectResponse | None] = asyncio.Queue()
        self.error: grpc.aio.AioRpcError | None = None
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for response in self.call:
                self.responses.put_nowait(response)
        except grpc.aio.AioRpcError as error:
            self.error = error
        finally:
            self.responses.put_nowait(None)

    async def send(self, **message: Any) -> None:
        await self.call.write(worker_pb2.ConnectRequest(**message))

    async def hello(self, queues: tuple[str, ...] = ("q",), **extra: Any) -> None:
        await self.send(hello=worker_pb2.Hello(parent=PARENT, worker="w1", queues=queues, **extra))
        assert (await self.recv()).WhichOneof("message") == "welcome"

    async def recv(self) -> worker_pb2.ConnectResponse:
        async with asyncio.timeout(5):
            response = await self.responses.get()
        assert response is not None, f"stream ended: {self.error}"
        return response

    async def close(self) -> None:
        await self.call.done_writing()
        async with asyncio.timeout(5):
            await self._reader


@pytest_asyncio.fixture
async def channel(server: ConveyorServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(server.grpc_target) as ch:
        yield ch


@pytest.fixture
def workers(channel: grpc.aio.Channel) -> worker_pb2_grpc.WorkerServiceAsyncStub:
    return worker_pb2_grpc.WorkerServiceStub(channel)


@pytest.fixture
def tasks(channel: grpc.aio.Channel) -> task_service_pb2_grpc.TaskServiceAsyncStub:
    return task_service_pb2_grpc.TaskServiceStub(channel)


def complete(lease: task_pb2.Lease, result: str = "ok") -> worker_pb2.CompleteTaskRequest:
    request = worker_pb2.CompleteTaskRequest(name=lease.task.name, lease_id=lease.lease_id)
    request.result.string_value = result
    return request


def fail(lease: task_pb2.Lease, retryable: bool = False) -> worker_pb2.FailTaskRequest:
    return worker_pb2.FailTaskRequest(
        name=lease.task.name,
        lease_id=lease.lease_id,
        error=task_pb2.TaskError(type="E", message="boom"),
        retryable=retryable,
    )


async def leases_of(stream: Stream, n: int) -> list[task_pb2.Lease]:
    """The next n pushed leases; a batched stream gets them as LeaseBatch only."""
    got: list[task_pb2.Lease] = []
    while len(got) < n:
        response = await stream.recv()
        assert response.WhichOneof("message") == "assignments", response
        got.extend(response.assignments.leases)
    return got


async def get_state(tasks: task_service_pb2_grpc.TaskServiceAsyncStub, key: str, name: str) -> int:
    task = await tasks.GetTask(task_service_pb2.GetTaskRequest(name=name), metadata=auth(key))
    state: int = task.state
    return state


async def test_a_batch_mixes_completes_and_fails_and_fences_each_item(
    server: ConveyorServer,
    keys: dict[str, str],
    workers: worker_pb2_grpc.WorkerServiceAsyncStub,
    tasks: task_service_pb2_grpc.TaskServiceAsyncStub,
) -> None:
    created = [await create_task(tasks, keys["operator"]) for _ in range(4)]
    stream = Stream(workers, keys["worker"])
    await stream.hello(batches=True)
    await stream.send(credit=worker_pb2.Credit(tasks=4))
    leased = await leases_of(stream, 4)
    assert {lease.task.name for lease in leased} == {t.name for t in created}
    a, b, c, d = leased
    # c's lease is stale: a report carrying another lease_id is refused alone.
    stale = complete(c)
    stale.lease_id = b.lease_id
    batch = worker_pb2.ReportBatch(completes=[complete(a, "A"), stale], fails=[fail(b), fail(d)])
    await stream.send(reports=batch)
    response = await stream.recv()
    assert response.WhichOneof("message") == "report_acks"
    acks = response.report_acks.acks
    assert [(x.name, x.lease_id) for x in acks] == [
        (a.task.name, a.lease_id),
        (c.task.name, b.lease_id),
        (b.task.name, b.lease_id),
        (d.task.name, d.lease_id),
    ]
    assert [x.status.code for x in acks] == [OK, FAILED_PRECONDITION, OK, OK]
    # No Task in the acks unless the Hello asked for them.
    assert not any(x.HasField("task") for x in acks)
    key = keys["viewer"]
    assert await get_state(tasks, key, a.task.name) == S.TASK_STATE_SUCCEEDED
    assert await get_state(tasks, key, b.task.name) == S.TASK_STATE_FAILED
    assert await get_state(tasks, key, c.task.name) == S.TASK_STATE_RUNNING
    assert await get_state(tasks, key, d.task.name) == S.TASK_STATE_FAILED

    # The refused item is answered again on its own once it carries its lease.
    await stream.send(reports=worker_pb2.ReportBatch(completes=[complete(c)]))
    (ack,) = (await stream.recv()).report_acks.acks
    assert ack.status.code == OK
    assert await get_state(tasks, key, c.task.name) == S.TASK_STATE_SUCCEEDED
    await stream.close()
    assert stream.error is None


async def test_acks_carry_the_task_when_the_hello_asks_and_single_reports_still_work(
    server: ConveyorServer,
    keys: dict[str, str],
    workers: worker_pb2_grpc.WorkerServiceAsyncStub,
    tasks: task_service_pb2_grpc.TaskServiceAsyncStub,
) -> None:
    for _ in range(3):
        await create_task(tasks, keys["operator"])
    stream = Stream(workers, keys["worker"])
    await stream.hello(batches=True, ack_tasks=True)
    await stream.send(credit=worker_pb2.Credit(tasks=3))
    first, second, third = await leases_of(stream, 3)
    await stream.send(reports=worker_pb2.ReportBatch(completes=[complete(first, "1")]))
    (ack,) = (await stream.recv()).report_acks.acks
    assert ack.task.state == S.TASK_STATE_SUCCEEDED and ack.task.result.string_value == "1"
    # A single report on a batched stream is answered by a single ReportAck.
    await stream.send(complete=complete(second))
    single = await stream.recv()
    assert single.WhichOneof("message") == "report_ack"
    assert single.report_ack.task.state == S.TASK_STATE_SUCCEEDED
    # Another project's task inside a batch is refused alone.
    other = complete(third)
    other.name = other.name.replace("projects/alpha/", "projects/beta/")
    await stream.send(reports=worker_pb2.ReportBatch(completes=[other, complete(third)]))
    acks = (await stream.recv()).report_acks.acks
    assert [x.status.code for x in acks] == [PERMISSION_DENIED, OK]
    await stream.close()


async def test_a_batch_spanning_two_limited_queues_frees_a_place_in_each(
    server: ConveyorServer,
    keys: dict[str, str],
    channel: grpc.aio.Channel,
    workers: worker_pb2_grpc.WorkerServiceAsyncStub,
    tasks: task_service_pb2_grpc.TaskServiceAsyncStub,
) -> None:
    queues: queue_pb2_grpc.QueueServiceAsyncStub = queue_pb2_grpc.QueueServiceStub(channel)
    for queue in ("one", "two"):
        for _ in range(3):
            await create_task(tasks, keys["operator"], queue=queue)
        await queues.UpdateQueue(
            queue_pb2.UpdateQueueRequest(
                queue=queue_pb2.Queue(name=f"{PARENT}/queues/{queue}", max_concurrency=1),
                update_mask=field_mask_pb2.FieldMask(paths=["max_concurrency"]),
            ),
            metadata=auth(keys["admin"]),
        )
    stream = Stream(workers, keys["worker"])
    await stream.hello(queues=("one", "two"), batches=True)
    await stream.send(credit=worker_pb2.Credit(tasks=10))
    held = await leases_of(stream, 2)
    assert sorted(x.task.queue for x in held) == ["one", "two"]  # one each: the limits hold
    done: list[str] = []
    for _ in range(2):
        # One batch ends the running task of both queues: each queue's next comes at once.
        await stream.send(
            reports=worker_pb2.ReportBatch(completes=[complete(held[0])], fails=[fail(held[1])])
        )
        acks = (await stream.recv()).report_acks.acks
        assert [x.status.code for x in acks] == [OK, OK]
        done.extend(x.task.name for x in held)
        held = await leases_of(stream, 2)
        assert sorted(x.task.queue for x in held) == ["one", "two"]
        assert not {x.task.name for x in held} & set(done)
    await stream.close()


async def test_report_tasks_answers_each_item(
    server: ConveyorServer,
    keys: dict[str, str],
    workers: worker_pb2_grpc.WorkerServiceAsyncStub,
    tasks: task_service_pb2_grpc.TaskServiceAsyncStub,
) -> None:
    for _ in range(3):
        await create_task(tasks, keys["operator"])
    leased = await workers.LeaseTasks(
        worker_pb2.LeaseTasksRequest(
            parent=PARENT, worker=f"{PARENT}/workers/u1", queues=["q"], max_tasks=3
        ),
        metadata=auth(keys["worker"]),
    )
    a, b, c = leased.leases
    stale = fail(c)
    stale.lease_id = a.lease_id
    answer = await workers.ReportTasks(
        worker_pb2.ReportTasksRequest(
            parent=PARENT,
            # a twice: the second is a replay of the first (answered OK, changes nothing).
            completes=[complete(a), complete(b), complete(a)],
            fails=[stale, worker_pb2.FailTaskRequest(name="nope", lease_id=c.lease_id)],
            ack_tasks=True,
        ),
        metadata=auth(keys["worker"]),
    )
    codes = [x.status.code for x in answer.acks]
    assert codes == [OK, OK, OK, FAILED_PRECONDITION, INVALID_ARGUMENT]
    assert answer.acks[0].task.state == S.TASK_STATE_SUCCEEDED
    assert await get_state(tasks, keys["viewer"], c.task.name) == S.TASK_STATE_RUNNING

    # Over REST, through the route its annotation declares.
    body = json_format.MessageToDict(worker_pb2.ReportTasksRequest(fails=[fail(c, retryable=True)]))
    async with httpx.AsyncClient(base_url=server.http_base_url) as http:
        reply = await http.post(
            f"/v1/{PARENT}/tasks:report",
            json=body,
            headers={"authorization": f"Bearer {keys['worker']}"},
        )
    assert reply.status_code == 200, reply.text
    (ack,) = reply.json()["acks"]
    assert ack["name"] == c.task.name and ack.get("status", {}).get("code", 0) == 0
    assert "task" not in ack

    too_many = worker_pb2.ReportTasksRequest(parent=PARENT, completes=[complete(a)] * 1001)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await workers.ReportTasks(too_many, metadata=auth(keys["worker"]))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_batched_and_single_sdk_workers_share_a_queue(
    server: ConveyorServer, keys: dict[str, str]
) -> None:
    target = server.grpc_target
    runs: dict[str, list[str]] = {"batched": [], "single": []}
    async with (
        AsyncClient(target, api_key=keys["operator"], project="alpha") as ops,
        AsyncClient(target, api_key=keys["worker"], project="alpha") as work,
    ):
        pool = []
        for label, batches in (("batched", True), ("single", False)):
            worker = Worker(work, concurrency=8, worker_id=f"w-{label}", batches=batches)

            def handler(ctx: TaskContext, label: str = label) -> Any:
                runs[label].append(ctx.name)
                if ctx.input % 5 == 0:
                    raise ValueError("every fifth fails")
                return ctx.input

            worker.task("n")(handler)
            pool.append(worker)
        created = [
            await ops.create_task("n", i, retry_policy={"max_attempts": 1}) for i in range(60)
        ]
        running = [asyncio.create_task(w.arun()) for w in pool]
        try:
            for task in created:
                done = await ops.wait_for_task(task.name, timeout=30)
                n = int(task.input.number_value)
                want = S.TASK_STATE_FAILED if n % 5 == 0 else S.TASK_STATE_SUCCEEDED
                assert done.state == want, done
        finally:
            for w in pool:
                await w.stop(5)
            await asyncio.gather(*running)
    ran = runs["batched"] + runs["single"]
    assert sorted(ran) == sorted(t.name for t in created)  # each once


async def test_the_sdk_coalesces_reports_that_finish_together() -> None:
    from conveyor.client._reports import BATCH_WINDOW, Reports
    from conveyor.client._stream import Stream as WorkerStream

    reports = Reports(batches=True, max_batch=3)
    stream = WorkerStream(1)
    sent = stream.requests()

    def report(i: int) -> worker_pb2.CompleteTaskRequest | worker_pb2.FailTaskRequest:
        name = f"{PARENT}/tasks/t{i}"
        if i % 2:
            return worker_pb2.FailTaskRequest(name=name)
        return worker_pb2.CompleteTaskRequest(name=name)

    # Up to max_batch at once: sent without waiting for the window.
    for i in range(3):
        reports.send(stream, 1, (f"t{i}", "l"), report(i), True)
    first = await anext(sent)
    assert [c.name[-2:] for c in first.reports.completes] == ["t0", "t2"]
    assert [f.name[-2:] for f in first.reports.fails] == ["t1"]
    # Fewer: sent together once the window closes.
    reports.send(stream, 1, ("t3", "l"), report(3), True)
    reports.send(stream, 1, ("t4", "l"), report(4), True)
    async with asyncio.timeout(BATCH_WINDOW + 1):
        second = await anext(sent)
    assert len(second.reports.completes) + len(second.reports.fails) == 2


@pytest.mark.parametrize(
    "text",
    [
        b'{"a": 1.5, "b": [1, 2, {"c": null}], "d": "\\u00e9", "e": true}',
        b"18446744073709551615",
        b"-0.0",
        b"1e400",  # beyond a double: orjson refuses it, json reads inf
    ],
)
def test_the_settle_rows_read_json_as_json_does(text: bytes) -> None:
    assert json_value(text) == json_value(memoryview(text)) == json.loads(text)


async def test_a_lean_settle_returns_of_an_ended_task_only_what_its_metrics_read(
    pool: Pool,
) -> None:
    """Acks without tasks: the ended tasks' rows carry name, queue, state, attempt and
    times, nothing else; the leased tasks' rows are whole."""
    async with pool.connection() as conn:
        await conn.execute(
            "INSERT INTO tasks (project, id, queue, kind, input, state, root_task)"
            " SELECT 'default', id, 'lean', 'k', '{\"big\": [1, 2, 3]}', 'QUEUED', id"
            " FROM (SELECT gen_random_uuid() AS id FROM generate_series(1, 4)) AS g"
        )
        take = leases.TakeRow("w", ["lean"], 2, None)
        first = (await leases.settle(conn, project="default", take=take)).leased
        done = [leases.CompleteRow(r.id, r.lease_id, '{"ok": 1}', "", None) for r in first]  # type: ignore[arg-type]
        settled = await leases.settle(
            conn, project="default", completes=done, take=take, ended_rows=False
        )
    assert sorted(settled.succeeded) == sorted(r.id for r in first)
    for row in settled.succeeded.values():
        assert (row.project, row.queue, row.state, row.attempt) == (
            "default",
            "lean",
            "SUCCEEDED",
            1,
        )
        assert row.start_time is not None and row.end_time is not None
        assert row.input is None and row.result is None and row.kind is None
    assert len(settled.leased) == 2
    assert all(r.input == {"big": [1, 2, 3]} and r.kind == "k" for r in settled.leased)
