"""AIP-134 updates for every Update method (UpdateQueue, UpdateSchedule, UpdateProject):
without update_mask exactly the fields present change (the JSON body's keys over REST,
the populated fields over gRPC), nested paths work, and a bad mask changes nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from google.protobuf import duration_pb2, field_mask_pb2

from conveyor.client import AsyncClient, InvalidArgumentError
from conveyor.server.app import ConveyorServer
from conveyor.server.domain import update_mask
from conveyor.server.errors import InvalidArgument
from conveyor.v1 import enums_pb2, project_pb2, queue_pb2, schedule_pb2, task_pb2

QUEUE = "projects/alpha/queues/mail"
SCHEDULE = "projects/alpha/schedules/nightly"


@pytest_asyncio.fixture
async def client(server: ConveyorServer, keys: dict[str, str]) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(server.grpc_target, api_key=keys["admin"]) as c:
        yield c


@pytest_asyncio.fixture
async def http(server: ConveyorServer, keys: dict[str, str]) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=server.http_base_url,
        headers={"Authorization": f"Bearer {keys['admin']}"},
        timeout=10,
    ) as c:
        yield c


async def _queue(client: AsyncClient) -> queue_pb2.Queue:
    return await client.queues.UpdateQueue(
        queue_pb2.UpdateQueueRequest(
            queue=queue_pb2.Queue(name=QUEUE, max_concurrency=2, rate_limit="10/s"),
            update_mask=field_mask_pb2.FieldMask(paths=["*"]),
        )
    )


async def _schedule(client: AsyncClient) -> schedule_pb2.Schedule:
    return await client.schedules.CreateSchedule(
        schedule_pb2.CreateScheduleRequest(
            parent="projects/alpha",
            schedule_id="nightly",
            schedule=schedule_pb2.Schedule(
                title="Nightly",
                description="first",
                spec=schedule_pb2.ScheduleSpec(
                    kind=enums_pb2.SCHEDULE_KIND_CRON,
                    expression="0 3 * * *",
                    timezone="Europe/Chisinau",
                ),
                task_template=schedule_pb2.TaskTemplate(
                    kind="report.build", queue="reports", priority=2, labels={"team": "data"}
                ),
                overlap_policy=enums_pb2.OVERLAP_POLICY_ALLOW_ALL,
            ),
        )
    )


async def _patch(http: httpx.AsyncClient, name: str, body: Any, **params: str) -> Any:
    response = await http.patch(f"/v1/{name}", json=body, params=params)
    assert response.status_code == 200, response.text
    return response.json()


async def test_rest_patch_changes_only_the_keys_in_the_body(
    client: AsyncClient, http: httpx.AsyncClient
) -> None:
    await _queue(client)
    queue = await _patch(http, QUEUE, {"max_concurrency": 5})
    assert (queue["max_concurrency"], queue["rate_limit"]) == (5, "10/s")
    # A key set to its zero value is present: it changes the field.
    queue = await _patch(http, QUEUE, {"rateLimit": ""})
    assert (queue["max_concurrency"], queue["rate_limit"]) == (5, "")
    queue = await _patch(http, QUEUE, {"max_concurrency": 0, "default_retry_policy": {}})
    assert queue["max_concurrency"] == 0

    await _schedule(client)
    schedule = await _patch(http, SCHEDULE, {"description": "second"})
    assert (schedule["title"], schedule["description"]) == ("Nightly", "second")
    assert schedule["overlap_policy"] == "OVERLAP_POLICY_ALLOW_ALL"
    assert schedule["task_template"]["labels"] == {"team": "data"}

    await http.patch("/v1/projects/alpha", json={"callbackUrl": "https://example.com/hook"})
    project = await _patch(http, "projects/alpha", {"display_name": "Alpha"})
    assert (project["display_name"], project["callback_url"]) == (
        "Alpha",
        "https://example.com/hook",
    )


async def test_rest_patch_takes_back_a_resource_as_it_was_read(
    client: AsyncClient, http: httpx.AsyncClient
) -> None:
    await _schedule(client)
    read = (await http.get(f"/v1/{SCHEDULE}")).json()
    read["title"] = "Renamed"
    # Output-only fields (state, next_run_time, create_time...) in the body are ignored.
    schedule = await _patch(http, SCHEDULE, read)
    assert (schedule["title"], schedule["description"]) == ("Renamed", "first")
    assert schedule["next_run_time"] == read["next_run_time"]


async def test_rest_nested_paths(client: AsyncClient, http: httpx.AsyncClient) -> None:
    saved = await _schedule(client)
    schedule = await _patch(http, SCHEDULE, {"task_template": {"priority": 7}})
    template = schedule["task_template"]
    assert (template["priority"], template["kind"], template["queue"]) == (
        7,
        "report.build",
        "reports",
    )
    schedule = await _patch(http, SCHEDULE, {"spec": {"expression": "0 4 * * *"}})
    assert schedule["spec"] == {
        "kind": "SCHEDULE_KIND_CRON",
        "expression": "0 4 * * *",
        "timezone": "Europe/Chisinau",
    }
    assert schedule["next_run_time"] != saved.next_run_time.ToJsonString()
    # An explicit mask wins over the body's keys.
    schedule = await _patch(
        http,
        SCHEDULE,
        {"title": "ignored", "task_template": {"priority": 3, "kind": "ignored"}},
        update_mask="task_template.priority",
    )
    assert (schedule["title"], schedule["task_template"]["priority"]) == ("Nightly", 3)
    assert schedule["task_template"]["kind"] == "report.build"


async def test_grpc_update_without_a_mask_changes_the_populated_fields(
    client: AsyncClient,
) -> None:
    await _queue(client)
    queue = await client.queues.UpdateQueue(
        queue_pb2.UpdateQueueRequest(queue=queue_pb2.Queue(name=QUEUE, max_concurrency=5))
    )
    assert (queue.max_concurrency, queue.rate_limit) == (5, "10/s")

    await _schedule(client)
    schedule = await client.schedules.UpdateSchedule(
        schedule_pb2.UpdateScheduleRequest(
            schedule=schedule_pb2.Schedule(name=SCHEDULE, description="second")
        )
    )
    assert (schedule.title, schedule.description) == ("Nightly", "second")
    assert schedule.overlap_policy == enums_pb2.OVERLAP_POLICY_ALLOW_ALL
    # A set message changes by its populated leaves.
    schedule = await client.schedules.UpdateSchedule(
        schedule_pb2.UpdateScheduleRequest(
            schedule=schedule_pb2.Schedule(
                name=SCHEDULE, task_template=schedule_pb2.TaskTemplate(priority=9)
            )
        )
    )
    assert (schedule.task_template.priority, schedule.task_template.kind) == (9, "report.build")

    await client.projects.UpdateProject(
        project_pb2.UpdateProjectRequest(
            project=project_pb2.Project(name="projects/alpha", labels={"env": "prod"})
        )
    )
    project = await client.projects.UpdateProject(
        project_pb2.UpdateProjectRequest(
            project=project_pb2.Project(name="projects/alpha", display_name="Alpha")
        )
    )
    assert (project.display_name, dict(project.labels)) == ("Alpha", {"env": "prod"})


async def test_grpc_nested_mask_paths(client: AsyncClient) -> None:
    await _schedule(client)
    schedule = await client.schedules.UpdateSchedule(
        schedule_pb2.UpdateScheduleRequest(
            schedule=schedule_pb2.Schedule(
                name=SCHEDULE,
                spec=schedule_pb2.ScheduleSpec(expression="30 5 * * *"),
                task_template=schedule_pb2.TaskTemplate(priority=4),
            ),
            update_mask=field_mask_pb2.FieldMask(
                paths=["spec.expression", "task_template.priority"]
            ),
        )
    )
    assert (schedule.spec.kind, schedule.spec.expression, schedule.spec.timezone) == (
        enums_pb2.SCHEDULE_KIND_CRON,
        "30 5 * * *",
        "Europe/Chisinau",
    )
    assert (schedule.task_template.priority, schedule.task_template.queue) == (4, "reports")

    await _queue(client)
    queue = await client.queues.UpdateQueue(
        queue_pb2.UpdateQueueRequest(
            queue=queue_pb2.Queue(
                name=QUEUE, default_retry_policy=task_pb2.RetryPolicy(max_attempts=7)
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["default_retry_policy.max_attempts"]),
        )
    )
    assert queue.default_retry_policy.max_attempts == 7
    queue = await client.queues.UpdateQueue(
        queue_pb2.UpdateQueueRequest(
            queue=queue_pb2.Queue(
                name=QUEUE,
                default_retry_policy=task_pb2.RetryPolicy(backoff=enums_pb2.BACKOFF_FIXED),
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["default_retry_policy.backoff"]),
        )
    )
    assert queue.default_retry_policy.max_attempts == 7
    assert queue.default_retry_policy.backoff == enums_pb2.BACKOFF_FIXED


@pytest.mark.parametrize(
    "path",
    ["nope", "title.nope", "spec.nope", "state", "next_run_time", "task_template.input.x"],
)
async def test_bad_schedule_mask_paths_name_update_mask(client: AsyncClient, path: str) -> None:
    saved = await _schedule(client)
    with pytest.raises(InvalidArgumentError) as caught:
        await client.schedules.UpdateSchedule(
            schedule_pb2.UpdateScheduleRequest(
                schedule=schedule_pb2.Schedule(name=SCHEDULE, title="changed"),
                update_mask=field_mask_pb2.FieldMask(paths=["title", path]),
            )
        )
    assert [f for f, _ in caught.value.field_violations] == ["update_mask"]
    unchanged = await client.schedules.GetSchedule(schedule_pb2.GetScheduleRequest(name=SCHEDULE))
    assert unchanged.title == saved.title


async def test_unknown_mask_paths_are_refused_by_every_update(
    client: AsyncClient, http: httpx.AsyncClient
) -> None:
    await _queue(client)
    await _schedule(client)
    for name in (QUEUE, SCHEDULE, "projects/alpha"):
        response = await http.patch(f"/v1/{name}", json={}, params={"update_mask": "nope"})
        assert response.status_code == 400, response.text
        problem = response.json()
        assert problem["code"] == "invalid_argument"
        assert [e["field"] for e in problem["errors"]] == ["update_mask"]
    with pytest.raises(InvalidArgumentError) as caught:
        await client.projects.UpdateProject(
            project_pb2.UpdateProjectRequest(
                project=project_pb2.Project(name="projects/alpha"),
                update_mask=field_mask_pb2.FieldMask(paths=["create_time"]),
            )
        )
    assert [f for f, _ in caught.value.field_violations] == ["update_mask"]
    queue = await client.queues.GetQueue(queue_pb2.GetQueueRequest(name=QUEUE))
    assert (queue.max_concurrency, queue.rate_limit) == (2, "10/s")


def test_masks_resolve_to_canonical_paths() -> None:
    schedule = schedule_pb2.Schedule(
        name=SCHEDULE,
        title="t",
        spec=schedule_pb2.ScheduleSpec(expression="x"),
        task_template=schedule_pb2.TaskTemplate(),
        state=enums_pb2.SCHEDULE_STATE_PAUSED,
    )
    updatable = ("title", "spec", "task_template")
    # Identifier and output-only fields never join an implied mask; a set empty message
    # names itself (it clears the field).
    assert update_mask.resolve([], schedule, updatable, "schedule").paths == (
        "spec.expression",
        "task_template",
        "title",
    )
    assert set(update_mask.resolve(["*"], schedule, updatable, "schedule").fields) == set(updatable)
    explicit = update_mask.resolve(["spec", "spec.kind"], schedule, updatable, "schedule")
    assert explicit.paths == ("spec",) and "spec" in explicit and "title" not in explicit
    with pytest.raises(InvalidArgument) as caught:
        update_mask.resolve(["*", "title"], schedule, updatable, "schedule")
    assert [v.field for v in caught.value.violations] == ["update_mask"]
    with pytest.raises(InvalidArgument) as caught:
        update_mask.resolve(
            [], schedule_pb2.Schedule(jitter=duration_pb2.Duration(seconds=1)), updatable, "s"
        )
    assert [v.field for v in caught.value.violations] == ["s.jitter"]
