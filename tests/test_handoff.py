"""Local hand-off: a replica that commits a create wakes its own idle workers at once.

The lease still goes through the one fenced statement, so a worker on another replica
woken by the NOTIFY races it the way any two leasers race: one lease, never two.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc
import psycopg

from conveyor.server.app import ConveyorServer
from conveyor.server.wakeups.notifier import Notifier
from conveyor.v1 import task_pb2, task_service_pb2, task_service_pb2_grpc, worker_pb2
from conveyor.v1 import worker_pb2_grpc as wgrpc

PARENT = "projects/alpha"
Inbox = asyncio.Queue[tuple[Any, worker_pb2.ConnectResponse]]


def auth(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)


def notifier_of(server: ConveyorServer) -> Notifier:
    return next(loop for loop in server.context.loops if isinstance(loop, Notifier))


@asynccontextmanager
async def stream(target: str, key: str, worker: str, inbox: Inbox) -> AsyncIterator[Any]:
    """A batched Connect stream with credit 1 whose responses go to `inbox`."""
    async with grpc.aio.insecure_channel(target) as channel:
        call = wgrpc.WorkerServiceStub(channel).Connect(metadata=auth(key))
        hello = worker_pb2.Hello(parent=PARENT, worker=worker, queues=["q"], batches=True)
        await call.write(worker_pb2.ConnectRequest(hello=hello))
        welcome = await call.read()
        assert isinstance(welcome, worker_pb2.ConnectResponse) and welcome.welcome.worker

        async def read() -> None:
            while isinstance(response := await call.read(), worker_pb2.ConnectResponse):
                inbox.put_nowait((call, response))

        reader = asyncio.create_task(read())
        await call.write(worker_pb2.ConnectRequest(credit=worker_pb2.Credit(tasks=1)))
        try:
            yield call
        finally:
            await call.done_writing()
            async with asyncio.timeout(5):
                await reader


async def create(channel: grpc.aio.Channel, key: str) -> task_pb2.Task:
    stub: task_service_pb2_grpc.TaskServiceAsyncStub = task_service_pb2_grpc.TaskServiceStub(
        channel
    )
    request = task_service_pb2.CreateTaskRequest(
        parent=PARENT, task=task_pb2.Task(queue="q", kind="k")
    )
    task: task_pb2.Task = await stub.CreateTask(request, metadata=auth(key))
    return task


async def next_lease(inbox: Inbox) -> tuple[Any, task_pb2.Lease]:
    while True:
        async with asyncio.timeout(10):
            call, response = await inbox.get()
        if response.WhichOneof("message") == "assignments":
            (lease,) = response.assignments.leases
            return call, lease


async def test_a_create_reaches_an_idle_stream_of_its_replica_without_notify(
    server: ConveyorServer, keys: dict[str, str]
) -> None:
    # Deaf to NOTIFY and to the listener's polls: only the local hand-off can wake it.
    notifier_of(server).deafen()
    inbox: Inbox = asyncio.Queue()
    async with (
        grpc.aio.insecure_channel(server.grpc_target) as channel,
        stream(server.grpc_target, keys["worker"], "w1", inbox),
    ):
        for _ in range(3):
            created = await create(channel, keys["operator"])
            call, lease = await next_lease(inbox)
            assert lease.task.name == created.name
            complete = worker_pb2.CompleteTaskRequest(name=lease.task.name, lease_id=lease.lease_id)
            await call.write(
                worker_pb2.ConnectRequest(reports=worker_pb2.ReportBatch(completes=[complete]))
            )


async def test_local_hand_off_racing_another_replicas_lease_leases_once(
    server: ConveyorServer, replica: ConveyorServer, keys: dict[str, str], database_url: str
) -> None:
    await notifier_of(replica).wait_listening()
    inbox: Inbox = asyncio.Queue()
    rounds = 40
    won: dict[str, int] = {}
    async with (
        grpc.aio.insecure_channel(server.grpc_target) as channel,
        stream(server.grpc_target, keys["worker"], "local", inbox) as local,
        stream(replica.grpc_target, keys["worker"], "remote", inbox),
    ):
        for _ in range(rounds):
            created = await create(channel, keys["operator"])
            call, lease = await next_lease(inbox)
            assert lease.task.name == created.name
            side = "local" if call is local else "remote"
            won[side] = won.get(side, 0) + 1
            complete = worker_pb2.CompleteTaskRequest(name=lease.task.name, lease_id=lease.lease_id)
            await call.write(
                worker_pb2.ConnectRequest(reports=worker_pb2.ReportBatch(completes=[complete]))
            )
            # Its ack says the report was taken: the stream has room again.
            while True:
                async with asyncio.timeout(10):
                    _, response = await inbox.get()
                if response.WhichOneof("message") == "report_acks":
                    assert response.report_acks.acks[0].status.code == 0
                    break
    print(f"hand-off race over {rounds} creates: {won}")
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE attempt = 1 AND state = 'SUCCEEDED') "
            "FROM tasks WHERE project = 'alpha'"
        )
        assert await cur.fetchone() == (rounds, rounds)
        cur = await conn.execute(
            "SELECT count(*), count(DISTINCT task_id) FROM task_attempts WHERE project = 'alpha'"
        )
        assert await cur.fetchone() == (rounds, rounds)


async def test_the_replica_skips_the_notify_of_a_create_it_handed_off(
    server: ConveyorServer, keys: dict[str, str]
) -> None:
    notifier = notifier_of(server)
    await notifier.wait_listening()
    inbox: Inbox = asyncio.Queue()
    async with (
        grpc.aio.insecure_channel(server.grpc_target) as channel,
        stream(server.grpc_target, keys["worker"], "w1", inbox),
    ):
        created = await create(channel, keys["operator"])
        _, lease = await next_lease(inbox)
        assert lease.task.name == created.name
        # Its NOTIFY comes back through LISTEN and is skipped: the hand-off woke the
        # stream already, so it does not run a second lease statement for it.
        async with asyncio.timeout(10):
            while True:
                if notifier.own >= 1:
                    break
                await asyncio.sleep(0.01)
