"""Resume: a task's resume_token reaches its worker, and the worker's new one is kept."""

from __future__ import annotations

import psycopg

from conveyor.client import AsyncClient
from conveyor.server.app import ConveyorServer
from conveyor.v1 import enums_pb2, task_pb2, task_service_pb2, worker_pb2

PARENT = "projects/alpha"


async def test_resume_token_goes_to_the_worker_and_comes_back(
    server: ConveyorServer, keys: dict[str, str], database_url: str
) -> None:
    async with (
        AsyncClient(server.grpc_target, api_key=keys["operator"]) as ops,
        AsyncClient(server.grpc_target, api_key=keys["worker"]) as worker,
    ):
        task = await ops.tasks.CreateTask(
            task_service_pb2.CreateTaskRequest(
                parent=PARENT,
                task=task_pb2.Task(queue="agents", kind="k", resume_token="session-1"),
            )
        )
        leased = await worker.workers.LeaseTasks(
            worker_pb2.LeaseTasksRequest(
                parent=PARENT, worker=f"{PARENT}/workers/w1", queues=["agents"], max_tasks=1
            )
        )
        assert [lease.task.name for lease in leased.leases] == [task.name]
        assert leased.leases[0].task.resume_token == "session-1"
        await worker.workers.CompleteTask(
            worker_pb2.CompleteTaskRequest(
                name=task.name, lease_id=leased.leases[0].lease_id, resume_token="session-2"
            )
        )
        done = await ops.tasks.GetTask(task_service_pb2.GetTaskRequest(name=task.name))
        assert done.state == enums_pb2.TASK_STATE_SUCCEEDED
        assert done.resume_token == "session-2"
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cur = await conn.execute(
            "SELECT type, task ->> 'resume_token' FROM events WHERE subject = %s ORDER BY id",
            (task.name,),
        )
        events = await cur.fetchall()
    assert events[0] == ("task.created", "session-1")
    assert events[-1] == ("task.succeeded", "session-2")
