"""One bulk action at a time per project, across replicas (#21 point 2)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable
from typing import Any

import grpc
import psycopg
import pytest
from google.api import httpbody_pb2

from conveyor.client import AsyncClient
from conveyor.client.errors import ConveyorError
from conveyor.server.app import ConveyorServer
from conveyor.v1 import command_pb2, enums_pb2, task_pb2, task_service_pb2

P = "projects/alpha"


async def _status(client: AsyncClient, name: str) -> int:
    command = await client.commands.GetCommand(command_pb2.GetCommandRequest(name=name))
    return command.status


async def test_a_second_bulk_action_is_refused_naming_the_running_one(
    server: ConveyorServer, replica: ConveyorServer, keys: dict[str, str], database_url: str
) -> None:
    async with (
        AsyncClient(server.grpc_target, api_key=keys["admin"], project="alpha") as first,
        AsyncClient(replica.grpc_target, api_key=keys["admin"], project="alpha") as second,
    ):
        tasks = [await first.create_task("job", i, queue="parked") for i in range(3)]
        for task in tasks:
            await first.cancel_task(task.name)

        # Hold one task's row so the batch retry's job blocks on it while it holds the
        # project's bulk slot: the slot is busy for as long as this transaction lasts.
        blocker = await psycopg.AsyncConnection.connect(database_url)
        async with blocker, blocker.transaction():
            task_id = uuid.UUID(tasks[0].name.rsplit("/", 1)[1])
            await blocker.execute("SELECT 1 FROM tasks WHERE id = %s FOR UPDATE", [task_id])
            running = await first.commands.BatchRetryTasks(
                command_pb2.BatchRetryTasksRequest(
                    parent=P,
                    filter=task_pb2.TaskFilter(states=[enums_pb2.TASK_STATE_CANCELLED]),
                    max=10,
                    idempotency_key="retry-1",
                )
            )
            assert running.status == enums_pb2.COMMAND_STATUS_ISSUED
            # Its replay is answered with it, not refused.
            replay = await second.commands.BatchRetryTasks(
                command_pb2.BatchRetryTasksRequest(parent=P, max=10, idempotency_key="retry-1")
            )
            assert replay.name == running.name

            # On the other replica: a delete, a purge and another retry are refused.
            refusals: list[Awaitable[Any]] = [
                second.tasks.BatchDeleteTasks(
                    task_service_pb2.BatchDeleteTasksRequest(
                        parent=P,
                        filter=task_pb2.TaskFilter(states=[enums_pb2.TASK_STATE_CANCELLED]),
                    )
                ),
                second.commands.PurgeQueue(
                    command_pb2.PurgeQueueRequest(parent=P, queue="parked", force=True)
                ),
                second.commands.BatchRetryTasks(
                    command_pb2.BatchRetryTasksRequest(parent=P, max=10)
                ),
            ]
            for call in refusals:
                with pytest.raises(ConveyorError) as refused:
                    await call
                assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
                assert refused.value.reason == "BULK_ACTION_RUNNING"
                assert refused.value.metadata["running"] == "BatchRetryTasks"
                assert "BatchRetryTasks is running" in str(refused.value)
            # Refused calls record nothing: the running retry is the last command.
            listed = await second.commands.ListCommands(
                command_pb2.ListCommandsRequest(parent=P, page_size=1000)
            )
            assert max(c.sequence for c in listed.commands) == running.sequence
            assert await _status(first, running.name) == enums_pb2.COMMAND_STATUS_ISSUED

        # The row is free: the retry finishes and gives the slot back.
        deadline = time.monotonic() + 30
        while await _status(first, running.name) != enums_pb2.COMMAND_STATUS_SUCCEEDED:
            assert time.monotonic() < deadline, "the batch retry did not finish"
            await asyncio.sleep(0.05)
        purged = await second.commands.PurgeQueue(
            command_pb2.PurgeQueueRequest(parent=P, queue="parked", force=True)
        )
        assert purged.status == enums_pb2.COMMAND_STATUS_SUCCEEDED
        deleted = await second.tasks.BatchDeleteTasks(
            task_service_pb2.BatchDeleteTasksRequest(
                parent=P, filter=task_pb2.TaskFilter(states=[enums_pb2.TASK_STATE_CANCELLED])
            )
        )
        assert deleted.deleted_count == 3


async def test_bulk_actions_of_other_projects_run_side_by_side(
    server: ConveyorServer, keys: dict[str, str], admin_key: str
) -> None:
    async with AsyncClient(server.grpc_target, api_key=admin_key) as system:
        beta_key = (await system.create_api_key("projects/beta", enums_pb2.ROLE_ADMIN)).secret
    async with (
        AsyncClient(server.grpc_target, api_key=keys["admin"], project="alpha") as alpha,
        AsyncClient(server.grpc_target, api_key=beta_key, project="beta") as beta,
    ):
        await alpha.create_task("job", 1, queue="q")
        await beta.create_task("job", 1, queue="q")

        async def purge(client: AsyncClient, parent: str) -> command_pb2.Command:
            return await client.commands.PurgeQueue(
                command_pb2.PurgeQueueRequest(parent=parent, queue="q", force=True)
            )

        done = await asyncio.gather(purge(alpha, P), purge(beta, "projects/beta"))
        assert [c.status for c in done] == [enums_pb2.COMMAND_STATUS_SUCCEEDED] * 2


async def test_an_export_of_more_than_10000_rows_is_a_bulk_action(
    server: ConveyorServer, keys: dict[str, str]
) -> None:
    async with AsyncClient(server.grpc_target, api_key=keys["admin"], project="alpha") as c:
        for _ in range(11):
            await c.tasks.BatchCreateTasks(
                task_service_pb2.BatchCreateTasksRequest(
                    parent=P,
                    requests=[
                        task_service_pb2.CreateTaskRequest(task=task_pb2.Task(kind="bulk"))
                        for _ in range(1000)
                    ],
                )
            )
        await c.cancel_task((await c.create_task("small", 1)).name)

        big = c.tasks.ExportTasks(task_service_pb2.ExportTasksRequest(parent=P))
        first_chunk = await big.read()  # the export has started and holds the slot
        assert isinstance(first_chunk, httpbody_pb2.HttpBody)
        with pytest.raises(ConveyorError) as refused:
            await c.tasks.BatchDeleteTasks(
                task_service_pb2.BatchDeleteTasksRequest(
                    parent=P, filter=task_pb2.TaskFilter(kinds=["small"])
                )
            )
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert refused.value.metadata["running"] == "ExportTasks"
        # A small export is no bulk action: it runs beside the big one.
        small = c.tasks.ExportTasks(
            task_service_pb2.ExportTasksRequest(
                parent=P, filter=task_pb2.TaskFilter(kinds=["small"])
            )
        )
        assert b"small" in b"".join([chunk.data async for chunk in small])

        rows = first_chunk.data.count(b"\n")
        async for chunk in big:
            rows += chunk.data.count(b"\n")
        assert rows == 1 + 11_001  # the header line and every task
        deleted = await c.tasks.BatchDeleteTasks(
            task_service_pb2.BatchDeleteTasksRequest(
                parent=P, filter=task_pb2.TaskFilter(kinds=["small"])
            )
        )
        assert deleted.deleted_count == 1
