"""A 1,000-task fan-in on 2 replicas: 4 workers finish the leaves concurrently, and each
dependent starts exactly once, after the last of its dependencies ended.

A task may name at most 100 dependencies, so the fan-in has two levels: 10 gates of 100
leaves each, and one join of the 10 gates. Nothing polls: each release happens in the
transaction that ends a dependency, and its NOTIFY wakes the workers.
"""

from __future__ import annotations

import asyncio

import grpc
import psycopg

from conveyor.server.app import ConveyorServer
from conveyor.v1 import (
    enums_pb2,
    task_pb2,
    task_service_pb2,
    task_service_pb2_grpc,
    worker_pb2,
    worker_pb2_grpc,
)

PARENT = "projects/alpha"
LEAVES = 1000
PER_GATE = 100
GATES = LEAVES // PER_GATE
TOTAL = LEAVES + GATES + 1
WORKERS = 4
QUEUES = ["leaf", "gate", "join"]


def _auth(key: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {key}"),)


async def _create(
    stub: task_service_pb2_grpc.TaskServiceAsyncStub, key: str, tasks: list[task_pb2.Task]
) -> list[str]:
    response = await stub.BatchCreateTasks(
        task_service_pb2.BatchCreateTasksRequest(
            parent=PARENT,
            requests=[task_service_pb2.CreateTaskRequest(task=t) for t in tasks],
            atomic=True,
        ),
        metadata=_auth(key),
    )
    return [r.task.name for r in response.results]


async def _work(target: str, key: str, name: str, window: int, done: list[str]) -> None:
    """Completes whatever it is given until every task of the test is done."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub: worker_pb2_grpc.WorkerServiceAsyncStub = worker_pb2_grpc.WorkerServiceStub(channel)
        call = stub.Connect(metadata=_auth(key))
        await call.write(
            worker_pb2.ConnectRequest(
                hello=worker_pb2.Hello(parent=PARENT, worker=name, queues=QUEUES, capacity=window)
            )
        )
        await call.write(worker_pb2.ConnectRequest(credit=worker_pb2.Credit(tasks=window)))
        async for response in call:
            kind = response.WhichOneof("message")
            if kind == "assignment":
                lease = response.assignment
                await call.write(
                    worker_pb2.ConnectRequest(
                        complete=worker_pb2.CompleteTaskRequest(
                            name=lease.task.name, lease_id=lease.lease_id, summary=name
                        )
                    )
                )
            elif kind == "report_ack":
                ack = response.report_ack
                assert ack.status.code == 0, ack.status.message
                assert ack.task.state == enums_pb2.TASK_STATE_SUCCEEDED
                done.append(ack.name)
                if len(done) == TOTAL:
                    await call.done_writing()


async def test_a_thousand_task_fan_in_on_two_replicas(
    server: ConveyorServer,
    replica: ConveyorServer,
    keys: dict[str, str],
    database_url: str,
) -> None:
    operator = keys["operator"]
    async with grpc.aio.insecure_channel(server.grpc_target) as channel:
        stub: task_service_pb2_grpc.TaskServiceAsyncStub = task_service_pb2_grpc.TaskServiceStub(
            channel
        )
        leaves: list[str] = []
        for _ in range(LEAVES // 250):
            leaves += await _create(
                stub, operator, [task_pb2.Task(queue="leaf", kind="leaf") for _ in range(250)]
            )
        gates = await _create(
            stub,
            operator,
            [
                task_pb2.Task(queue="gate", kind="gate", depends_on=leaves[i : i + PER_GATE])
                for i in range(0, LEAVES, PER_GATE)
            ],
        )
        await _create(stub, operator, [task_pb2.Task(queue="join", kind="join", depends_on=gates)])

        done: list[str] = []
        targets = [server.grpc_target, replica.grpc_target]
        workers = [
            asyncio.create_task(_work(targets[i % 2], keys["worker"], f"w{i}", 4 + 4 * i, done))
            for i in range(WORKERS)
        ]
        async with asyncio.timeout(120):
            # A worker stops once it saw the last ack; the others end with the server's
            # answer to their half-close, or are cancelled here once every task is done.
            while len(done) < TOTAL:
                await asyncio.wait(workers, timeout=0.1, return_when=asyncio.FIRST_COMPLETED)
                for w in workers:
                    if w.done() and w.exception() is not None:
                        raise w.exception()  # type: ignore[misc]
        for w in workers:
            w.cancel()
        await asyncio.gather(*workers, return_exceptions=True)

    assert len(done) == TOTAL and len(set(done)) == TOTAL
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT count(*) FILTER (WHERE state = 'SUCCEEDED' AND attempt = 1),"
            " count(*) FILTER (WHERE deps_remaining = 0) FROM tasks WHERE project = 'alpha'"
        )
        assert await cur.fetchone() == (TOTAL, TOTAL)
        # Every dependent ran once (one attempt, one task.started, one task.queued), and
        # started only after the last of its dependencies had ended.
        cur = await conn.execute(
            """
            SELECT t.kind, a.start_time > (
                       SELECT max(d.end_time) FROM tasks d
                       WHERE d.project = t.project AND d.id = ANY (t.depends_on)),
                   (SELECT count(*) FROM task_attempts x
                    WHERE x.project = t.project AND x.task_id = t.id),
                   (SELECT count(*) FROM events e
                    WHERE e.project = t.project AND e.subject = 'projects/alpha/tasks/' || t.id
                      AND e.type IN ('task.started', 'task.queued'))
            FROM tasks t
            JOIN task_attempts a ON a.project = t.project AND a.task_id = t.id
            WHERE t.project = 'alpha' AND t.depends_on IS NOT NULL
            ORDER BY t.kind
            """
        )
        rows = await cur.fetchall()
    assert rows == [("gate", True, 1, 2)] * GATES + [("join", True, 1, 2)]
