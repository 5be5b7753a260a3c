"""WorkerService over a real server: the Connect stream, the unary lease calls, workers."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import grpc
import psycopg
import pytest
import pytest_asyncio
from google.protobuf import duration_pb2, struct_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from conveyor.server.app import ConveyorServer
from conveyor.server.loops.promoter import Promoter
from conveyor.server.loops.reaper import Reaper
from conveyor.server.wakeups.notifier import Notifier
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

PARENT = "projects/alpha"
Metadata = tuple[tuple[str, str], ...]


def auth(key: str) -> Metadata:
    return (("authorization", f"Bearer {key}"),)


def seconds(value: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromTimedelta(timedelta(seconds=value))
    return d


def loop_of(server: ConveyorServer, kind: type[Any]) -> Any:
    return next(loop for loop in server.context.loops if isinstance(loop, kind))


def details(error: grpc.aio.AioRpcError | status_pb2.Status) -> dict[str, Any]:
    """The google.rpc.Status details of an error, by kind."""
    status = (
        error if isinstance(error, status_pb2.Status) else rpc_status.from_call(error)  # type: ignore[arg-type]
    )
    assert status is not None
    found: dict[str, Any] = {}
    for kind in (
        error_details_pb2.ErrorInfo,
        error_details_pb2.BadRequest,
        error_details_pb2.PreconditionFailure,
    ):
        for packed in status.details:
            message = kind()
            if packed.Unpack(message):
                found[kind.__name__] = message
    return found


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


async def create_task(
    tasks: task_service_pb2_grpc.TaskServiceAsyncStub, key: str, queue: str = "q", **fields: Any
) -> task_pb2.Task:
    request = task_service_pb2.CreateTaskRequest(
        parent=PARENT, task=task_pb2.Task(queue=queue, kind="test.kind", **fields)
    )
    task: task_pb2.Task = await tasks.CreateTask(request, metadata=auth(key))
    return task


class Stream:
    """A raw Connect stream with a background reader (reads are never cancelled)."""

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

    async def hello(
        self, worker: str = "w1", queues: tuple[str, ...] = ("q",), **extra: Any
    ) -> Any:
        await self.send(
            hello=worker_pb2.Hello(parent=PARENT, worker=worker, queues=queues, **extra)
        )
        welcome = await self.recv()
        assert welcome.WhichOneof("message") == "welcome"
        return welcome.welcome

    async def recv(self, within: float = 5.0) -> worker_pb2.ConnectResponse:
        async with asyncio.timeout(within):
            response = await self.responses.get()
        assert response is not None, f"stream ended: {self.error}"
        return response

    async def silent(self, within: float = 0.3) -> bool:
        """Nothing arrives within `within` seconds."""
        await asyncio.sleep(within)
        return self.responses.empty()

    async def close(self) -> None:
        await self.call.done_writing()
        async with asyncio.timeout(5):
            await self._reader


async def test_connect_pushes_tasks_created_after_hello(
    server: ConveyorServer,
    keys: dict[str, str],
    workers: worker_pb2_grpc.WorkerServiceAsyncStub,
    tasks: task_service_pb2_grpc.TaskServiceAsyncStub,
) -> None:
    notifier = loop_of(server, Notifier)
    await notifier.wait_listening()
    stream = Stream(workers, keys["worker"])
    welcome = await stream.hello(
        capacity=4, labels={"zone": "a"}, sdk_version="test/1", lease_duration=seconds(30)
    )
    assert welcome.worker == f"{PARENT}/workers/w1"
    assert welcome.heartbeat_interval.ToTimedelta() == timedelta(seconds=10)
    await stream.send(credit=worker_pb2.Credit(tasks=1))
    assert await stream.silent(0.2)

    latencies = []
    for i in range(15):
        started = time.perf_counter()
        created = await create_task(tasks, keys["operator"], input=struct_pb2.Value(number_value=i))
        pushed = await stream.recv()
        latencies.append((time.perf_counter() - started) * 1000)
        assert pushed.WhichOneof("message") == "assignment"
        lease = pushed.assignment
        assert lease.task.name == created.name
        assert lease.task.state == enums_pb2.TASK_STATE_RUNNING and lease.task.attempt == 1
        assert lease.task.input.number_value == i
        assert lease.task.worker == f"{PARENT}/workers/w1"
        await stream.send(
            complete=worker_pb2.CompleteTaskRequest(
                name=lease.task.name,
                lease_id=lease.lease_id,
                result=struct_pb2.Value(string_value=f"done {i}"),
                summary="ok",
            )
        )
        ack = (await stream.recv()).report_ack
        assert (ack.name, ack.lease_id, ack.status.code) == (lease.task.name, lease.lease_id, 0)
        assert ack.task.state == enums_pb2.TASK_STATE_SUCCEEDED
        assert ack.task.result.string_value == f"done {i}"
    print(
        f"create-to-push latency over Connect: p50 {statistics.median(latencies):.2f} ms, "
        f"max {max(latencies):.2f} ms"
    )
    # Generous bounds for a loaded CI box; the bench measures the real figures.
    assert statistics.median(latencies) < 100
    await stream.close()
    assert stream.error is None


async def test_credit_is_a_window_of_unreported_tasks(
    server: ConveyorServer,
    keys: dict[str, str],
    workers: worker_pb2_grpc.WorkerServiceAsyncStub,
    tasks: task_service_pb2_grpc.TaskServiceAsyncStub,
) -> None:
    for _ in range(5):
        await create_task(tasks, keys["operator"])
    stream = Stream(workers, keys["worker"])
    await stream.hello()
    assert await stream.silent(0.1)  # the window starts at 0
    await stream.send(credit=worker_pb2.Credit(tasks=2))
    first = [(await stream.recv()).assignment for _ in range(2)]
    assert await stream.silent(0.2)

    # A report frees its slot: the next task comes right after the ack.
    await stream.send(
        complete=worker_pb2.CompleteTaskRequest(name=first[0].task.name, lease_id=first[0].lease_id)
    )
    assert (await stream.recv()).WhichOneof("message") == "report_ack"
    third = (await stream.recv()).assignment
    assert third.task.name not in {a.task.name for a in first}

    # Shrinking below what is held: reports free slots but nothing new comes.
    await stream.send(credit=worker_pb2.Credit(tasks=-10))
    for lease in (first[1], third):
        await stream.send(
            fail=worker_pb2.FailTaskRequest(
                name=lease.task.name,
                lease_id=lease.lease_id,
                error=task_pb2.TaskError(type="E", message="nope"),
                retryable=False,
            )
        )
        ack = (await stream.recv()).report_ack
        assert ack.status.code == 0 and ack.task.state == enums_pb2.TASK_STATE_FAILED
    assert await stream.silent(0.2)
    await stream.send(credit=worker_pb2.Credit(tasks=5))
    rest = [(await stream.recv()).assignment for _ in range(2)]
    assert len({a.task.name for a in [*first, third, *rest]}) == 5
    await stream.close()


async def test_a_paused_queue_pushes_nothing_until_resumed(
    server: ConveyorServer,
    keys: dict[str, str],
    channel: grpc.aio.Channel,
    workers: worker_pb2_grpc.WorkerServiceAsyncStub,
    tasks: task_service_pb2_grpc.TaskServiceAsyncStub,
) -> None:
    queues: queue_pb2_grpc.QueueServiceAsyncStub = queue_pb2_grpc.QueueServiceStub(channel)
    created = await create_task(tasks, keys["operator"])
    await queues.PauseQueue(
        queue_pb2.PauseQueueRequest(name=f"{PARENT}/queues/q"), metadata=auth(keys["operator"])
    )
    stream = Stream(workers, keys["worker"])
    await stream.hello()
    await stream.send(credit=worker_pb2.Credit(tasks=1))
    assert await stream.silent(0.3)
    await queues.ResumeQueue(
        queue_pb2.ResumeQueueRequest(name=f"{PARENT}/queues/q"), metadata=auth(keys["operator"])
    )
    # Resuming NOTIFYs the queue: the task comes without waiting for a poll.
    assert (await stream.recv(within=1.5)).assignment.task.name == created.name
    await stream.close()


async def test_heartbeat_carries_cancel_requested_and_stale_reports_are_refused(
    server: ConveyorServer,
    keys: dict[str, str],
    workers: worker_pb2_grpc.WorkerServiceAsyncStub,
    tasks: task_service_pb2_grpc.TaskServiceAsyncStub,
    database_url: str,
) -> None:
    await create_task(tasks, keys["operator"], queue="a")
    await create_task(tasks, keys["operator"], queue="b")
    stream = Stream(workers, keys["worker"])
    await stream.hello(queues=("a", "b"))
    await stream.send(credit=worker_pb2.Credit(tasks=2))
    a, b = [(await stream.recv()).assignment for _ in range(2)]
    if a.task.queue != "a":
        a, b = b, a

    await stream.send(
        heartbeat=worker_pb2.ExtendLeaseRequest(
            name=a.task.name, lease_id=a.lease_id, progress=struct_pb2.Struct()
        )
    )
    beat = (await stream.recv()).heartbeat
    assert (beat.name, beat.lease_id, beat.cancel_requested) == (a.task.name, a.lease_id, False)
    assert beat.lease_expire_time.ToDatetime() >= a.lease_expire_time.ToDatetime()

    await tasks.CancelTask(
        task_service_pb2.CancelTaskRequest(name=a.task.name, reason="enough"),
        metadata=auth(keys["operator"]),
    )
    await stream.send(
        heartbeat=worker_pb2.ExtendLeaseRequest(name=a.task.name, lease_id=a.lease_id)
    )
    assert (await stream.recv()).heartbeat.cancel_requested
    await stream.send(
        fail=worker_pb2.FailTaskRequest(
            name=a.task.name, lease_id=a.lease_id, error=task_pb2.TaskError(message="cancelled")
        )
    )
    ack = (await stream.recv()).report_ack
    assert ack.task.state == enums_pb2.TASK_STATE_INTERRUPTED

    # b's lease expires (by a later database clock) before the worker reports.
    reaper: Reaper = loop_of(server, Reaper)
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        row = await (await conn.execute("SELECT now() + interval '1 hour'")).fetchone()
    assert row is not None
    assert (await reaper.run_once(now=row[0])).retried == 1
    await stream.send(
        heartbeat=worker_pb2.ExtendLeaseRequest(name=b.task.name, lease_id=b.lease_id)
    )
    lost = (await stream.recv()).heartbeat
    assert lost.cancel_requested and not lost.HasField("lease_expire_time")
    await stream.send(
        complete=worker_pb2.CompleteTaskRequest(name=b.task.name, lease_id=b.lease_id)
    )
    ack = (await stream.recv()).report_ack
    assert ack.status.code == code_pb2.FAILED_PRECONDITION and not ack.HasField("task")
    found = details(ack.status)
    assert found["ErrorInfo"].reason == "LEASE_STALE"
    violation = found["PreconditionFailure"].violations[0]
    assert (violation.type, violation.subject) == ("LEASE", b.task.name)

    # Bad reports are answered in order too, naming the field.
    await stream.send(complete=worker_pb2.CompleteTaskRequest(name="nope", lease_id="x"))
    ack = (await stream.recv()).report_ack
    assert ack.status.code == code_pb2.INVALID_ARGUMENT
    assert details(ack.status)["BadRequest"].field_violations[0].field == "complete.name"
    await stream.close()


async def test_first_message_must_be_a_valid_hello(
    server: ConveyorServer, keys: dict[str, str], workers: worker_pb2_grpc.WorkerServiceAsyncStub
) -> None:
    stream = Stream(workers, keys["worker"])
    await stream.send(credit=worker_pb2.Credit(tasks=1))
    assert await stream.responses.get() is None
    assert stream.error is not None and stream.error.code() == grpc.StatusCode.INVALID_ARGUMENT

    stream = Stream(workers, keys["worker"])
    await stream.send(
        hello=worker_pb2.Hello(
            parent=PARENT, worker="Bad_Id", queues=[], capacity=-1, lease_duration=seconds(0.01)
        )
    )
    assert await stream.responses.get() is None
    assert stream.error is not None and stream.error.code() == grpc.StatusCode.INVALID_ARGUMENT
    fields = {v.field for v in details(stream.error)["BadRequest"].field_violations}
    assert fields == {"hello.worker", "hello.queues", "hello.capacity", "hello.lease_duration"}

    stream = Stream(workers, keys["viewer"])
    await stream.send(hello=worker_pb2.Hello(parent=PARENT, worker="w", queues=["q"]))
    assert await stream.responses.get() is None
    assert stream.error is not None and stream.error.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_workers_are_listed_with_their_tasks_and_presence(
    server: ConveyorServer,
    keys: dict[str, str],
    workers: worker_pb2_grpc.WorkerServiceAsyncStub,
    tasks: task_service_pb2_grpc.TaskServiceAsyncStub,
) -> None:
    viewer = auth(keys["viewer"])
    created = await create_task(tasks, keys["operator"])
    stream = Stream(workers, keys["worker"])
    await stream.hello(
        worker="w2", queues=("q", "r"), capacity=3, labels={"zone": "b"}, sdk_version="py/0.1"
    )
    await stream.send(credit=worker_pb2.Credit(tasks=1))
    await stream.recv()
    other = Stream(workers, keys["worker"])
    await other.hello(worker="w1")

    page = await workers.ListWorkers(
        worker_pb2.ListWorkersRequest(parent=PARENT, page_size=1), metadata=viewer
    )
    assert [w.name for w in page.workers] == [f"{PARENT}/workers/w1"]
    page = await workers.ListWorkers(
        worker_pb2.ListWorkersRequest(parent=PARENT, page_token=page.next_page_token),
        metadata=viewer,
    )
    (w2,) = page.workers
    assert page.next_page_token == ""
    assert w2.state == enums_pb2.WORKER_STATE_CONNECTED
    assert list(w2.queues) == ["q", "r"] and w2.capacity == 3 and dict(w2.labels) == {"zone": "b"}
    assert list(w2.active_tasks) == [created.name] and w2.sdk_version == "py/0.1"
    assert w2.HasField("connect_time") and w2.HasField("last_seen_time")

    await stream.close()
    got = await workers.GetWorker(
        worker_pb2.GetWorkerRequest(name=f"{PARENT}/workers/w2"), metadata=viewer
    )
    assert got.state == enums_pb2.WORKER_STATE_DISCONNECTED
    assert list(got.active_tasks) == [created.name]  # still leased until it expires
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await workers.GetWorker(
            worker_pb2.GetWorkerRequest(name=f"{PARENT}/workers/nobody"), metadata=viewer
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    await other.close()


async def test_lease_tasks_long_poll_returns_when_a_task_arrives(
    server: ConveyorServer,
    keys: dict[str, str],
    workers: worker_pb2_grpc.WorkerServiceAsyncStub,
    tasks: task_service_pb2_grpc.TaskServiceAsyncStub,
) -> None:
    notifier = loop_of(server, Notifier)
    await notifier.wait_listening()
    request = worker_pb2.LeaseTasksRequest(
        parent=PARENT, worker="poller", queues=["q"], max_tasks=5, wait_timeout=seconds(10)
    )
    started = time.perf_counter()
    poll = asyncio.ensure_future(workers.LeaseTasks(request, metadata=auth(keys["worker"])))
    # The poll found nothing and parked: its waiter is registered with the notifier.
    async with asyncio.timeout(10):
        while True:
            if len(notifier.waiters):
                break
            await asyncio.sleep(0.01)
    assert not poll.done()
    created = await create_task(tasks, keys["operator"])
    response = await poll
    assert time.perf_counter() - started < 3
    (lease,) = response.leases
    assert lease.task.name == created.name and lease.task.worker == f"{PARENT}/workers/poller"

    empty = await workers.LeaseTasks(
        worker_pb2.LeaseTasksRequest(
            parent=PARENT, worker="poller", queues=["q"], wait_timeout=seconds(0.2)
        ),
        metadata=auth(keys["worker"]),
    )
    assert list(empty.leases) == []
    got = await workers.GetWorker(
        worker_pb2.GetWorkerRequest(name=f"{PARENT}/workers/poller"),
        metadata=auth(keys["viewer"]),
    )
    assert got.state == enums_pb2.WORKER_STATE_CONNECTED and list(got.queues) == ["q"]


async def test_lease_tasks_refuses_bad_input(
    server: ConveyorServer, keys: dict[str, str], workers: worker_pb2_grpc.WorkerServiceAsyncStub
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await workers.LeaseTasks(
            worker_pb2.LeaseTasksRequest(
                parent=PARENT,
                worker="BAD",
                queues=[],
                max_tasks=101,
                wait_timeout=seconds(61),
                lease_duration=seconds(-1),
            ),
            metadata=auth(keys["worker"]),
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    fields = {v.field for v in details(caught.value)["BadRequest"].field_violations}
    assert fields == {"worker", "queues", "max_tasks", "wait_timeout", "lease_duration"}


async def test_unary_reports_share_the_stream_semantics(
    server: ConveyorServer,
    keys: dict[str, str],
    workers: worker_pb2_grpc.WorkerServiceAsyncStub,
    tasks: task_service_pb2_grpc.TaskServiceAsyncStub,
) -> None:
    worker = auth(keys["worker"])
    for _ in range(2):
        await create_task(
            tasks, keys["operator"], retry_policy=task_pb2.RetryPolicy(max_attempts=2)
        )
    response = await workers.LeaseTasks(
        worker_pb2.LeaseTasksRequest(
            parent=PARENT, worker="u1", queues=["q"], max_tasks=2, lease_duration=seconds(60)
        ),
        metadata=worker,
    )
    a, b = response.leases
    assert a.lease_expire_time.ToDatetime() - a.task.start_time.ToDatetime() == timedelta(
        seconds=60
    )

    extended = await workers.ExtendLease(
        worker_pb2.ExtendLeaseRequest(
            name=a.task.name, lease_id=a.lease_id, lease_duration=seconds(120)
        ),
        metadata=worker,
    )
    assert not extended.cancel_requested
    assert extended.lease_expire_time.ToDatetime() > a.lease_expire_time.ToDatetime()

    done = await workers.CompleteTask(
        worker_pb2.CompleteTaskRequest(
            name=a.task.name, lease_id=a.lease_id, summary="fine", resume_token="r1"
        ),
        metadata=worker,
    )
    assert done.state == enums_pb2.TASK_STATE_SUCCEEDED and done.resume_token == "r1"

    retrying = await workers.FailTask(
        worker_pb2.FailTaskRequest(
            name=b.task.name,
            lease_id=b.lease_id,
            error=task_pb2.TaskError(type="Timeout", message="slow"),
            retryable=True,
        ),
        metadata=worker,
    )
    assert retrying.state == enums_pb2.TASK_STATE_SCHEDULED
    assert retrying.error.message == "slow" and retrying.error.retryable

    for call in (
        workers.CompleteTask(
            worker_pb2.CompleteTaskRequest(name=b.task.name, lease_id=b.lease_id), metadata=worker
        ),
        workers.ExtendLease(
            worker_pb2.ExtendLeaseRequest(name=b.task.name, lease_id=b.lease_id), metadata=worker
        ),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        found = details(caught.value)
        assert found["ErrorInfo"].reason == "LEASE_STALE"
        assert found["PreconditionFailure"].violations[0].subject == b.task.name

    missing = a.task.name[:-12] + "000000000000"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await workers.CompleteTask(
            worker_pb2.CompleteTaskRequest(name=missing, lease_id=a.lease_id), metadata=worker
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND

    # The retry becomes ready when its backoff is over (the promoter wakes for it).
    promoter: Promoter = loop_of(server, Promoter)
    await promoter.wait_for_pass()
    again = await workers.LeaseTasks(
        worker_pb2.LeaseTasksRequest(
            parent=PARENT, worker="u1", queues=["q"], wait_timeout=seconds(10)
        ),
        metadata=worker,
    )
    (lease,) = again.leases
    assert lease.task.name == b.task.name and lease.task.attempt == 2


async def test_leasing_falls_back_to_polling_while_listen_is_down(
    server: ConveyorServer,
    keys: dict[str, str],
    workers: worker_pb2_grpc.WorkerServiceAsyncStub,
    tasks: task_service_pb2_grpc.TaskServiceAsyncStub,
) -> None:
    notifier: Notifier = loop_of(server, Notifier)
    await notifier.wait_listening()
    stream = Stream(workers, keys["worker"])
    await stream.hello()
    await stream.send(credit=worker_pb2.Credit(tasks=1))
    await notifier.drop_connection()
    created = await create_task(tasks, keys["operator"])
    pushed = (await stream.recv(within=5)).assignment
    assert pushed.task.name == created.name
    await notifier.wait_listening()
    await stream.close()


async def test_server_shutdown_ends_streams_and_leaves_leases(
    server_settings: Any,
    keys: dict[str, str],
    server: ConveyorServer,
    workers: worker_pb2_grpc.WorkerServiceAsyncStub,
    tasks: task_service_pb2_grpc.TaskServiceAsyncStub,
    database_url: str,
) -> None:
    created = await create_task(tasks, keys["operator"])
    stream = Stream(workers, keys["worker"])
    await stream.hello(worker="leaving")
    await stream.send(credit=worker_pb2.Credit(tasks=1))
    await stream.recv()
    started = time.perf_counter()
    await server.stop(grace=5)
    assert time.perf_counter() - started < 3  # the stream did not hold the drain
    assert await stream.responses.get() is None
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cur = await conn.execute("SELECT connected FROM workers WHERE id = 'leaving'")
        assert await cur.fetchone() == (False,)
        cur = await conn.execute(
            "SELECT state FROM tasks WHERE id = %s", [created.name.rsplit("/", 1)[1]]
        )
        assert await cur.fetchone() == ("RUNNING",)
        cur = await conn.execute(
            "SELECT type FROM events WHERE subject = %s ORDER BY id",
            [f"{PARENT}/workers/leaving"],
        )
        assert [r[0] for r in await cur.fetchall()] == ["worker.connected", "worker.disconnected"]
