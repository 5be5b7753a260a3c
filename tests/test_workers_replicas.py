"""4 workers on 2 server replicas sharing one database: every task runs exactly once."""

from __future__ import annotations

import asyncio
import time

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
TASKS = 2000
WORKERS = 4
BATCH = 250


async def create_batch(tasks: task_service_pb2_grpc.TaskServiceAsyncStub, key: str) -> None:
    request = task_service_pb2.BatchCreateTasksRequest(
        parent=PARENT,
        requests=[
            task_service_pb2.CreateTaskRequest(
                parent=PARENT, task=task_pb2.Task(queue="q", kind="test.kind")
            )
            for _ in range(BATCH)
        ],
    )
    response = await tasks.BatchCreateTasks(request, metadata=(("authorization", f"Bearer {key}"),))
    assert all(r.WhichOneof("result") == "task" for r in response.results)


class Progress:
    """Counts acks across workers; `all_done` is set when every task was acked."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self.all_done = asyncio.Event()

    def acked(self) -> None:
        self.done += 1
        if self.done >= self.total:
            self.all_done.set()


async def run_worker(
    target: str, key: str, name: str, window: int, progress: Progress
) -> list[str]:
    """Completes whatever it is given until every task is done; returns what it did."""
    done: list[str] = []
    async with grpc.aio.insecure_channel(target) as channel:
        stub: worker_pb2_grpc.WorkerServiceAsyncStub = worker_pb2_grpc.WorkerServiceStub(channel)
        call = stub.Connect(metadata=(("authorization", f"Bearer {key}"),))
        await call.write(
            worker_pb2.ConnectRequest(
                hello=worker_pb2.Hello(parent=PARENT, worker=name, queues=["q"], capacity=window)
            )
        )
        await call.write(worker_pb2.ConnectRequest(credit=worker_pb2.Credit(tasks=window)))

        async def finish() -> None:
            # Half-close once everything is done: the server answers what it has and ends.
            await progress.all_done.wait()
            await call.done_writing()

        finisher = asyncio.create_task(finish())
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
                progress.acked()
        await finisher
    return done


async def test_four_workers_on_two_replicas_run_each_task_once(
    server: ConveyorServer,
    replica: ConveyorServer,
    keys: dict[str, str],
    database_url: str,
) -> None:
    progress = Progress(TASKS)
    async with grpc.aio.insecure_channel(server.grpc_target) as channel:
        tasks: task_service_pb2_grpc.TaskServiceAsyncStub = task_service_pb2_grpc.TaskServiceStub(
            channel
        )
        # Half before the workers connect, half while they work (NOTIFY wakes them).
        for _ in range(TASKS // 2 // BATCH):
            await create_batch(tasks, keys["operator"])
        targets = [server.grpc_target, replica.grpc_target]
        started = time.perf_counter()
        workers = [
            asyncio.create_task(
                run_worker(targets[i % 2], keys["worker"], f"w{i}", 1 + 4 * i, progress)
            )
            for i in range(WORKERS)
        ]
        for _ in range(TASKS // 2 // BATCH):
            await create_batch(tasks, keys["operator"])
            await asyncio.sleep(0.05)
        async with asyncio.timeout(60):
            results = await asyncio.gather(*workers)
    elapsed = time.perf_counter() - started

    names = [name for result in results for name in result]
    print(
        f"{TASKS} tasks, {WORKERS} workers on 2 replicas: {elapsed:.1f} s "
        f"({TASKS / elapsed:.0f} tasks/s), per worker {[len(r) for r in results]}"
    )
    assert len(names) == TASKS and len(set(names)) == TASKS
    assert all(results), "every worker got work"
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE attempt = 1) "
            "FROM tasks WHERE project = 'alpha' AND state = 'SUCCEEDED'"
        )
        assert await cur.fetchone() == (TASKS, TASKS)
        # One attempt per task (so never two leases at once), succeeded, by the worker
        # that reported it.
        cur = await conn.execute(
            """
            SELECT count(*), count(DISTINCT a.task_id),
                   count(*) FILTER (WHERE a.outcome = 'SUCCEEDED' AND a.worker = t.summary)
            FROM task_attempts a JOIN tasks t ON t.project = a.project AND t.id = a.task_id
            WHERE a.project = 'alpha'
            """
        )
        assert await cur.fetchone() == (TASKS, TASKS, TASKS)
        cur = await conn.execute(
            "SELECT type, count(*) FROM events WHERE project = 'alpha' AND type LIKE 'task.%' "
            "GROUP BY type ORDER BY type"
        )
        assert await cur.fetchall() == [
            ("task.created", TASKS),
            ("task.started", TASKS),
            ("task.succeeded", TASKS),
        ]
        cur = await conn.execute(
            "SELECT count(*) FROM workers WHERE project = 'alpha' AND connected"
        )
        assert await cur.fetchone() == (0,)
