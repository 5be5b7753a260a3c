"""request_id (AIP-155) on every create: a retry returns the first result, and the same
id with a different request is ALREADY_EXISTS with reason REQUEST_ID_REUSED."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

import grpc
import httpx
import psycopg
import pytest
import pytest_asyncio
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from conveyor.server.app import ConveyorServer
from conveyor.server.loops.retention import RetentionLoop
from conveyor.v1 import (
    enums_pb2,
    event_pb2,
    event_pb2_grpc,
    project_pb2,
    project_pb2_grpc,
    schedule_pb2,
    schedule_pb2_grpc,
    task_pb2,
    task_service_pb2,
    task_service_pb2_grpc,
)

PARENT = "projects/default"


@pytest_asyncio.fixture
async def channel(server: ConveyorServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(server.grpc_target) as ch:
        yield ch


@pytest.fixture
def md(admin_key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {admin_key}"),)


async def refused(call: Awaitable[Any]) -> error_details_pb2.ErrorInfo:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS, caught.value
    status = rpc_status.from_call(caught.value)  # type: ignore[arg-type]
    assert status is not None
    for packed in status.details:
        info = error_details_pb2.ErrorInfo()
        if packed.Unpack(info):
            return info
    raise AssertionError("no ErrorInfo")


async def test_create_task_same_body_returns_first_other_body_is_refused(
    channel: grpc.aio.Channel, md: Any
) -> None:
    stub = task_service_pb2_grpc.TaskServiceStub(channel)

    def create(input_: str) -> Any:
        task = task_pb2.Task(kind="k", queue="q")
        task.input.string_value = input_
        request = task_service_pb2.CreateTaskRequest(parent=PARENT, task=task, request_id="r-1")
        return stub.CreateTask(request, metadata=md)

    first = await create("a")
    again = await create("a")
    assert again.name == first.name
    info = await refused(create("b"))
    assert info.reason == "REQUEST_ID_REUSED"
    assert info.metadata["request_id"] == "r-1"
    assert info.metadata["resource"] == first.name

    # A batch item with the same request_id and parent/task hashes like CreateTask.
    same = task_service_pb2.CreateTaskRequest(request_id="r-1")
    same.task.CopyFrom(task_pb2.Task(kind="k", queue="q"))
    same.task.input.string_value = "a"
    other = task_service_pb2.CreateTaskRequest(request_id="r-1")
    other.task.CopyFrom(task_pb2.Task(kind="k", queue="q"))
    other.task.input.string_value = "c"
    batch = await stub.BatchCreateTasks(
        task_service_pb2.BatchCreateTasksRequest(parent=PARENT, requests=[same, other]),
        metadata=md,
    )
    assert batch.results[0].task.name == first.name  # a retry, not a dedupe hit
    assert batch.results[1].status.code == grpc.StatusCode.ALREADY_EXISTS.value[0]


async def test_rest_reuse_is_409_request_id_reused(server: ConveyorServer, admin_key: str) -> None:
    async with httpx.AsyncClient(
        base_url=server.http_base_url, headers={"authorization": f"Bearer {admin_key}"}
    ) as http:
        url = f"/v1/{PARENT}/tasks?request_id=r-rest"
        first = await http.post(url, json={"kind": "k", "input": {"n": 1}})
        assert first.status_code == 200, first.text
        again = await http.post(url, json={"input": {"n": 1}, "kind": "k"})
        assert again.json()["name"] == first.json()["name"]
        other = await http.post(url, json={"kind": "k", "input": {"n": 2}})
    assert other.status_code == 409, other.text
    assert other.headers["content-type"] == "application/problem+json"
    assert other.json()["code"] == "request_id_reused"


Create = Callable[[str, str], Awaitable[Any]]


def creators(channel: grpc.aio.Channel, md: Any) -> dict[str, Create]:
    schedules = schedule_pb2_grpc.ScheduleServiceStub(channel)
    projects = project_pb2_grpc.ProjectServiceStub(channel)
    events = event_pb2_grpc.EventServiceStub(channel)

    def schedule(request_id: str, title: str) -> Any:
        message = schedule_pb2.Schedule(title=title)
        message.spec.kind = enums_pb2.SCHEDULE_KIND_CRON
        message.spec.expression = "0 3 * * *"
        message.task_template.kind = "k"
        return schedules.CreateSchedule(
            schedule_pb2.CreateScheduleRequest(
                parent=PARENT, schedule=message, request_id=request_id
            ),
            metadata=md,
        )

    def project(request_id: str, title: str) -> Any:
        return projects.CreateProject(
            project_pb2.CreateProjectRequest(
                project_id="p-" + request_id,
                project=project_pb2.Project(display_name=title),
                request_id=request_id,
            ),
            metadata=md,
        )

    def api_key(request_id: str, title: str) -> Any:
        return projects.CreateApiKey(
            project_pb2.CreateApiKeyRequest(
                parent=PARENT,
                api_key=project_pb2.ApiKey(role=enums_pb2.ROLE_VIEWER, display_name=title),
                request_id=request_id,
            ),
            metadata=md,
        )

    def event(request_id: str, title: str) -> Any:
        return events.PublishEvent(
            event_pb2.PublishEventRequest(
                parent=PARENT,
                event=event_pb2.Event(type="deploy.done", subject=title),
                request_id=request_id,
            ),
            metadata=md,
        )

    return {"schedule": schedule, "project": project, "api_key": api_key, "event": event}


def identity(message: Any) -> str:
    return str(getattr(message, "name", "") or message.id)


@pytest.mark.parametrize("kind", ["schedule", "project", "api_key", "event"])
async def test_other_creates_take_a_request_id(
    channel: grpc.aio.Channel, md: Any, kind: str
) -> None:
    create = creators(channel, md)[kind]
    first = await create("rid", "one")
    again = await create("rid", "one")
    assert identity(again) == identity(first)
    info = await refused(create("rid", "two"))
    assert info.reason == "REQUEST_ID_REUSED"
    fresh = await create("rid2", "one")
    assert identity(fresh) != identity(first)
    if kind == "api_key":
        assert first.secret and not again.secret  # the secret is shown once


async def test_concurrent_retries_make_one_resource(channel: grpc.aio.Channel, md: Any) -> None:
    create = creators(channel, md)["schedule"]
    made = await asyncio.gather(*(create("together", "same") for _ in range(5)))
    assert len({identity(m) for m in made}) == 1


async def test_retention_forgets_old_request_ids(
    server: ConveyorServer, channel: grpc.aio.Channel, md: Any, database_url: str
) -> None:
    create = creators(channel, md)["event"]
    await create("old-id", "one")
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await conn.execute("UPDATE request_ids SET create_time = now() - interval '8 days'")
    await RetentionLoop(server.context.pool, timedelta(days=7)).run_once()
    again = await create("old-id", "two")  # forgotten: a new event, not REQUEST_ID_REUSED
    assert again.subject == "two"
