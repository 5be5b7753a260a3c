"""A task keeps its creator's trace context (#22 point 1): the `traceparent` of a
CreateTask, BatchCreateTasks or REST create is stored (migration 0026) and handed to the
worker in its Lease. Here the server does not trace: the caller's context passes through
unchanged, so a traced producer and a traced worker still share one trace.
"""

from __future__ import annotations

import httpx

from conveyor.client import AsyncClient
from conveyor.server.app import ConveyorServer
from conveyor.v1 import task_pb2, task_service_pb2, worker_pb2

PARENT = "projects/default"
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
OTHER = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"


async def _leases(client: AsyncClient, queue: str, count: int) -> dict[str, str]:
    """Leases `count` tasks of `queue`: {task kind: lease traceparent}."""
    found: dict[str, str] = {}
    while len(found) < count:
        response = await client.workers.LeaseTasks(
            worker_pb2.LeaseTasksRequest(
                parent=PARENT, worker="w", queues=[queue], max_tasks=count - len(found)
            )
        )
        for lease in response.leases:
            found[lease.task.kind] = lease.traceparent
    return found


def _create(kind: str, queue: str) -> task_service_pb2.CreateTaskRequest:
    return task_service_pb2.CreateTaskRequest(
        parent=PARENT, task=task_pb2.Task(kind=kind, queue=queue)
    )


async def test_a_lease_carries_the_traceparent_its_task_was_created_with(
    server: ConveyorServer, admin_key: str
) -> None:
    async with AsyncClient(server.grpc_target, api_key=admin_key) as client:
        await client.tasks.CreateTask(
            _create("traced", "tp"), metadata=(("traceparent", TRACEPARENT),)
        )
        await client.tasks.CreateTask(_create("untraced", "tp"))
        # Invalid contexts are ignored, as W3C receivers do, and the create goes on.
        await client.tasks.CreateTask(
            _create("garbled", "tp"), metadata=(("traceparent", "00-not-a-trace"),)
        )
        await client.tasks.BatchCreateTasks(
            task_service_pb2.BatchCreateTasksRequest(
                parent=PARENT, requests=[_create("batch.a", "tp"), _create("batch.b", "tp")]
            ),
            metadata=(("traceparent", OTHER),),
        )
        assert await _leases(client, "tp", 5) == {
            "traced": TRACEPARENT,
            "untraced": "",
            "garbled": "",
            "batch.a": OTHER,
            "batch.b": OTHER,
        }


async def test_a_rest_create_keeps_the_traceparent_header(
    server: ConveyorServer, admin_key: str
) -> None:
    async with httpx.AsyncClient(base_url=server.http_base_url) as http:
        answer = await http.post(
            f"/v1/{PARENT}/tasks",
            json={"kind": "rest.traced", "queue": "rest"},
            headers={"authorization": f"Bearer {admin_key}", "traceparent": TRACEPARENT},
        )
        assert answer.status_code == 200, answer.text
    async with AsyncClient(server.grpc_target, api_key=admin_key) as client:
        assert await _leases(client, "rest", 1) == {"rest.traced": TRACEPARENT}
