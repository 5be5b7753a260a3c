"""Who created what (#21 point 4): Task.creator and TaskFilter.creators, `me` included."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio

from conveyor.client import AsyncClient, InvalidArgumentError
from conveyor.server.app import ConveyorServer
from conveyor.v1 import (
    enums_pb2,
    event_pb2,
    schedule_pb2,
    task_pb2,
    task_service_pb2,
)

PARENT = "projects/alpha"


@pytest_asyncio.fixture
async def two_keys(server: ConveyorServer, admin_key: str) -> AsyncIterator[dict[str, str]]:
    """Two operator keys of `alpha`: {key name: secret}."""
    async with AsyncClient(server.grpc_target, api_key=admin_key) as admin:
        await admin.create_project("alpha")
        minted = [
            await admin.create_api_key(PARENT, enums_pb2.ROLE_OPERATOR, display_name=n)
            for n in ("ann", "bob")
        ]
    yield {key.name: key.secret for key in minted}


async def _create(client: AsyncClient, kind: str) -> task_pb2.Task:
    return await client.tasks.CreateTask(
        task_service_pb2.CreateTaskRequest(parent=PARENT, task=task_pb2.Task(kind=kind))
    )


async def _list(client: AsyncClient, *creators: str) -> list[task_pb2.Task]:
    response = await client.tasks.ListTasks(
        task_service_pb2.ListTasksRequest(
            parent=PARENT, filter=task_pb2.TaskFilter(creators=list(creators))
        )
    )
    return list(response.tasks)


async def test_a_task_names_the_key_that_created_it_and_me_lists_the_callers_own(
    server: ConveyorServer, two_keys: dict[str, str]
) -> None:
    (ann, ann_secret), (bob, bob_secret) = two_keys.items()
    async with (
        AsyncClient(server.grpc_target, api_key=ann_secret) as as_ann,
        AsyncClient(server.grpc_target, api_key=bob_secret) as as_bob,
    ):
        created = await _create(as_ann, "ann.one")
        assert created.creator == ann
        batch = await as_bob.tasks.BatchCreateTasks(
            task_service_pb2.BatchCreateTasksRequest(
                parent=PARENT,
                requests=[
                    task_service_pb2.CreateTaskRequest(task=task_pb2.Task(kind="bob.one")),
                    task_service_pb2.CreateTaskRequest(task=task_pb2.Task(kind="bob.two")),
                ],
            )
        )
        assert [r.task.creator for r in batch.results] == [bob, bob]
        read = await as_bob.tasks.GetTask(task_service_pb2.GetTaskRequest(name=created.name))
        assert read.creator == ann

        assert [t.kind for t in await _list(as_ann, "me")] == ["ann.one"]
        assert [t.kind for t in await _list(as_bob, "me")] == ["bob.one", "bob.two"]
        assert [t.kind for t in await _list(as_bob, ann)] == ["ann.one"]
        assert len(await _list(as_bob, "me", ann)) == 3

        # The same filter through WatchEvents' history: bob's own tasks only.
        events = await as_bob.events.ListEvents(
            event_pb2.ListEventsRequest(
                parent=PARENT,
                filter=event_pb2.EventFilter(
                    types=["task.created"], task_filter=task_pb2.TaskFilter(creators=["me"])
                ),
            )
        )
        assert sorted(e.task.kind for e in events.events) == ["bob.one", "bob.two"]


async def test_another_keys_page_token_does_not_continue_a_me_list(
    server: ConveyorServer, two_keys: dict[str, str]
) -> None:
    (_, ann_secret), (_, bob_secret) = two_keys.items()
    async with (
        AsyncClient(server.grpc_target, api_key=ann_secret) as as_ann,
        AsyncClient(server.grpc_target, api_key=bob_secret) as as_bob,
    ):
        for kind in ("a", "b"):
            await _create(as_ann, kind)
        request = task_service_pb2.ListTasksRequest(
            parent=PARENT, page_size=1, filter=task_pb2.TaskFilter(creators=["me"])
        )
        first = await as_ann.tasks.ListTasks(request)
        assert first.next_page_token
        request.page_token = first.next_page_token
        with pytest.raises(InvalidArgumentError):
            await as_bob.tasks.ListTasks(request)


async def test_a_fired_task_names_its_schedule_and_schedules_list_by_me(
    server: ConveyorServer, two_keys: dict[str, str]
) -> None:
    (ann, ann_secret), (_, bob_secret) = two_keys.items()
    async with (
        AsyncClient(server.grpc_target, api_key=ann_secret) as as_ann,
        AsyncClient(server.grpc_target, api_key=bob_secret) as as_bob,
    ):
        schedule = await as_ann.schedules.CreateSchedule(
            schedule_pb2.CreateScheduleRequest(
                parent=PARENT,
                schedule_id="nightly",
                schedule=schedule_pb2.Schedule(
                    spec=schedule_pb2.ScheduleSpec(
                        kind=enums_pb2.SCHEDULE_KIND_CRON, expression="0 3 * * *"
                    ),
                    task_template=schedule_pb2.TaskTemplate(kind="report.build"),
                ),
            )
        )
        assert schedule.created_by == ann
        fired = await as_bob.schedules.RunScheduleNow(
            schedule_pb2.RunScheduleNowRequest(name=schedule.name)
        )
        assert fired.creator == schedule.name
        assert [t.name for t in await _list(as_bob, schedule.name)] == [fired.name]
        assert await _list(as_bob, "me") == []

        def listed(response: schedule_pb2.ListSchedulesResponse) -> list[str]:
            return [s.name for s in response.schedules]

        mine = schedule_pb2.ListSchedulesRequest(
            parent=PARENT, filter=schedule_pb2.ScheduleFilter(created_by="me")
        )
        assert listed(await as_ann.schedules.ListSchedules(mine)) == [schedule.name]
        assert listed(await as_bob.schedules.ListSchedules(mine)) == []


async def test_me_over_rest_is_the_calling_key(
    server: ConveyorServer, two_keys: dict[str, str]
) -> None:
    (ann, ann_secret), (_, bob_secret) = two_keys.items()
    async with AsyncClient(server.grpc_target, api_key=bob_secret) as as_bob:
        await _create(as_bob, "bob.one")
    async with httpx.AsyncClient(
        base_url=server.http_base_url, headers={"authorization": f"Bearer {ann_secret}"}
    ) as http:
        created = await http.post(f"/v1/{PARENT}/tasks", json={"kind": "ann.rest"})
        assert created.status_code == 200, created.text
        assert created.json()["creator"] == ann
        mine = await http.get(f"/v1/{PARENT}/tasks", params={"filter.creators": "me"})
        assert mine.status_code == 200, mine.text
        assert [t["kind"] for t in mine.json()["tasks"]] == ["ann.rest"]
