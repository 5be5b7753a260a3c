"""Redaction of task input (#21 point 3) over gRPC: the settings, who reads what through
GetTask, ListTasks, GetTaskTree, ListEvents, WatchEvents, schedules and leases, and
retries that keep the stored input."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import psycopg
import pytest
import pytest_asyncio
from google.protobuf import field_mask_pb2, json_format, struct_pb2

from conveyor.client import AsyncClient, ConveyorError
from conveyor.server.app import ConveyorServer
from conveyor.server.domain.redaction import Paths, Redactions, check_paths, redact_value
from conveyor.server.errors import Violations
from conveyor.server.store.db import Pool
from conveyor.v1 import (
    command_pb2,
    enums_pb2,
    event_pb2,
    project_pb2,
    queue_pb2,
    schedule_pb2,
    task_pb2,
    task_service_pb2,
)

PROJECT = "projects/alpha"
R = "<redacted>"
INPUT: dict[str, Any] = {
    "to": "ada@example.com",
    "password": "hunter2",
    "card": {"number": "4111111111111111", "exp": "12/30"},
    "items": [{"password": "p1"}, {"token": "t"}],
    "note": "keep",
}
# The project redacts `password` at any depth and /card/number; queue `mail` adds /to.
SEEN_BY_VIEWER: dict[str, Any] = {
    "to": R,
    "password": R,
    "card": {"number": R, "exp": "12/30"},
    "items": [{"password": R}, {"token": "t"}],
    "note": "keep",
}


def as_json(value: struct_pb2.Value) -> Any:
    return json_format.MessageToDict(value)


def value_of(data: Any) -> struct_pb2.Value:
    value = struct_pb2.Value()
    json_format.ParseDict(data, value)
    return value


# The rule itself ---------------------------------------------------------------------


def test_pointers_name_one_place_and_bare_keys_match_at_any_depth() -> None:
    data = {
        "a/b": 1,
        "m~n": {"x": 2},
        "list": [{"k": "v"}, "s", {"k": ["deep", {"k": 3}]}],
        "k": {"inner": "whole object goes"},
        "keep": {"k2": 4},
    }
    value = value_of(data)
    paths = Paths.of(["/a~1b", "/m~0n/x", "/list/1", "/list/9", "/nothing/here", "k"])
    assert paths is not None
    assert redact_value(value, paths, write=False)
    assert as_json(value) == data  # looking changes nothing
    assert redact_value(value, paths)
    assert as_json(value) == {
        "a/b": R,
        "m~n": {"x": R},
        "list": [{"k": R}, R, {"k": R}],
        "k": R,
        "keep": {"k2": 4},
    }
    untouched = value_of({"other": 1})
    assert not redact_value(untouched, paths)
    # An index with a leading zero is not an index (RFC 6901); a scalar has no children.
    assert not redact_value(value_of([1, 2]), Paths.of(["/01"]))  # type: ignore[arg-type]
    assert not redact_value(value_of("text"), Paths.of(["/a", "a"]))  # type: ignore[arg-type]
    assert Paths.of([]) is None


def test_bad_paths_are_named_one_by_one() -> None:
    v = Violations()
    paths = ["/ok", "ok", "ok", "", "a/b", "/bad~2", " x", "y" * 257, "/n\x00l", "x\x1e"]
    kept = check_paths(v, paths, "p")
    assert kept[:2] == ["/ok", "ok"] and kept.count("ok") == 1
    assert [item.field for item in v.items] == [f"p[{i}]" for i in range(3, 10)]
    v = Violations()
    check_paths(v, [f"k{i}" for i in range(65)], "p")
    assert [item.field for item in v.items] == ["p"]


async def test_a_rule_is_read_once_per_refresh_and_forgotten_on_change(
    pool: Pool, conn: psycopg.AsyncConnection[Any]
) -> None:
    now = [100.0]
    redactions = Redactions(pool, refresh=2.0, clock=lambda: now[0])
    await conn.execute("INSERT INTO projects (id, webhook_secret) VALUES ('p', 's')")
    await conn.execute("UPDATE projects SET redact_paths = '{password}' WHERE id = 'p'")
    await conn.execute("INSERT INTO queues (project, id, redact_paths) VALUES ('p', 'q', '{/to}')")
    await conn.execute("INSERT INTO queues (project, id) VALUES ('p', 'plain')")
    rule = await redactions.rule("p")
    assert (rule.project_paths, dict(rule.queue_paths)) == (("password",), {"q": ("/to",)})
    assert not rule.webhook_full_input
    # Another replica clears the paths: this one reads the change once its copy is old.
    await conn.execute("UPDATE projects SET redact_paths = '{}' WHERE id = 'p'")
    now[0] += 1.9
    assert (await redactions.rule("p")).project_paths == ("password",)
    now[0] += 0.1
    assert (await redactions.rule("p")).project_paths == ()
    # A change served here is read at once.
    await conn.execute("UPDATE projects SET redact_paths = '{token}' WHERE id = 'p'")
    redactions.forget("p")
    assert (await redactions.rule("p")).project_paths == ("token",)
    assert (await redactions.rule("nowhere")).empty


# Servers -----------------------------------------------------------------------------


@pytest_asyncio.fixture
async def clients(
    server: ConveyorServer, keys: dict[str, str]
) -> AsyncIterator[dict[str, AsyncClient]]:
    opened = {
        role: AsyncClient(server.grpc_target, api_key=secret, project="alpha")
        for role, secret in keys.items()
    }
    try:
        yield opened
    finally:
        for client in opened.values():
            await client.close()


async def set_project_paths(admin: AsyncClient, paths: list[str]) -> project_pb2.Project:
    return await admin.projects.UpdateProject(
        project_pb2.UpdateProjectRequest(
            project=project_pb2.Project(name=PROJECT, redact_paths=paths),
            update_mask=field_mask_pb2.FieldMask(paths=["redact_paths"]),
        )
    )


async def set_queue_paths(client: AsyncClient, queue: str, paths: list[str]) -> queue_pb2.Queue:
    return await client.queues.UpdateQueue(
        queue_pb2.UpdateQueueRequest(
            queue=queue_pb2.Queue(name=f"{PROJECT}/queues/{queue}", redact_paths=paths),
            update_mask=field_mask_pb2.FieldMask(paths=["redact_paths"]),
        )
    )


@pytest_asyncio.fixture
async def secret_task(clients: dict[str, AsyncClient]) -> task_pb2.Task:
    """A task in queue `mail` whose input holds secrets at the redacted paths."""
    await set_project_paths(clients["admin"], ["password", "/card/number"])
    await set_queue_paths(clients["operator"], "mail", ["/to"])
    return await clients["operator"].create_task("email.send", INPUT, queue="mail")


async def test_settings_read_back_validate_and_clear(clients: dict[str, AsyncClient]) -> None:
    admin, ops = clients["admin"], clients["operator"]
    project = await set_project_paths(admin, ["password", "/card/number", "password"])
    assert list(project.redact_paths) == ["password", "/card/number"]
    assert not project.webhook_full_input
    got = await admin.projects.GetProject(project_pb2.GetProjectRequest(name=PROJECT))
    assert list(got.redact_paths) == ["password", "/card/number"]
    # Without a mask, the fields present change (AIP-134): webhook_full_input alone.
    flipped = await admin.projects.UpdateProject(
        project_pb2.UpdateProjectRequest(
            project=project_pb2.Project(name=PROJECT, webhook_full_input=True)
        )
    )
    assert flipped.webhook_full_input and list(flipped.redact_paths) == list(got.redact_paths)

    queue = await ops.update_queue("mail", redact_paths=["/to", "secret"])  # the client's way
    assert list(queue.redact_paths) == ["/to", "secret"]
    assert list((await ops.get_queue("mail")).redact_paths) == ["/to", "secret"]

    with pytest.raises(ConveyorError) as bad:
        await set_project_paths(admin, ["/ok", "a/b", "/x~9"])
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in bad.value.field_violations] == [
        "project.redact_paths[1]",
        "project.redact_paths[2]",
    ]
    with pytest.raises(ConveyorError) as bad_queue:
        await set_queue_paths(ops, "mail", [""])
    assert [f for f, _ in bad_queue.value.field_violations] == ["queue.redact_paths[0]"]
    # Refused updates changed nothing.
    got = await admin.projects.GetProject(project_pb2.GetProjectRequest(name=PROJECT))
    assert list(got.redact_paths) == ["password", "/card/number"]
    assert list((await ops.get_queue("mail")).redact_paths) == ["/to", "secret"]
    # A viewer may not change them.
    with pytest.raises(ConveyorError) as denied:
        await set_queue_paths(clients["viewer"], "mail", [])
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED

    assert list((await set_queue_paths(ops, "mail", [])).redact_paths) == []
    assert list((await set_project_paths(admin, [])).redact_paths) == []


async def test_reads_are_redacted_for_a_viewer_and_whole_for_the_others(
    clients: dict[str, AsyncClient], secret_task: task_pb2.Task
) -> None:
    assert as_json(secret_task.input) == INPUT  # the creator (operator) reads it whole
    child = await clients["operator"].create_task(
        "email.child", INPUT, queue="other", parent_task=secret_task.name
    )
    expected = {
        "viewer": SEEN_BY_VIEWER,
        "operator": INPUT,
        "admin": INPUT,
        "worker": INPUT,
    }
    # Outside queue `mail`, only the project's paths apply.
    child_for_viewer = {**SEEN_BY_VIEWER, "to": INPUT["to"]}
    for role, want in expected.items():
        client = clients[role]
        got = await client.get_task(secret_task.name)
        assert as_json(got.input) == want, role
        listed = await client.tasks.ListTasks(
            task_service_pb2.ListTasksRequest(parent=PROJECT, order_by="create_time")
        )
        by_name = {t.name: as_json(t.input) for t in listed.tasks}
        assert by_name[secret_task.name] == want, role
        child_want = child_for_viewer if role == "viewer" else INPUT
        assert by_name[child.name] == child_want, role
        tree = await client.tasks.GetTaskTree(
            task_service_pb2.GetTaskTreeRequest(name=secret_task.name)
        )
        assert {t.name: as_json(t.input) for t in tree.tasks} == {
            secret_task.name: want,
            child.name: child_want,
        }, role
        events = await client.events.ListEvents(
            event_pb2.ListEventsRequest(
                parent=PROJECT,
                filter=event_pb2.EventFilter(task_filter=task_pb2.TaskFilter(queues=["mail"])),
            )
        )
        snapshots = [as_json(e.task.input) for e in events.events if e.HasField("task")]
        assert snapshots and all(s == want for s in snapshots), role


async def first_task_event(call: Any, name: str) -> event_pb2.Event:
    async for event in call:
        if event.task.name == name:
            found: event_pb2.Event = event
            return found
    raise AssertionError("the stream ended")


async def test_watch_events_redacts_for_a_viewer_replayed_and_live(
    clients: dict[str, AsyncClient], secret_task: task_pb2.Task
) -> None:
    viewer, ops = clients["viewer"], clients["operator"]
    listed = await ops.events.ListEvents(
        event_pb2.ListEventsRequest(
            parent=PROJECT, filter=event_pb2.EventFilter(tasks=[secret_task.name])
        )
    )
    after = listed.events[0].id - 1
    calls: list[Any] = []
    try:
        # Replayed from the event of the task's creation.
        for client, want in ((viewer, SEEN_BY_VIEWER), (ops, INPUT)):
            calls.append(
                call := client.events.WatchEvents(
                    event_pb2.WatchEventsRequest(parent=PROJECT, after=after)
                )
            )
            assert as_json((await first_task_event(call, secret_task.name)).task.input) == want
        # Live: both streams are open (a keep-alive opens each) when the task is
        # cancelled; the event is rendered once and read two ways.
        live = [
            viewer.events.WatchEvents(event_pb2.WatchEventsRequest(parent=PROJECT)),
            ops.events.WatchEvents(event_pb2.WatchEventsRequest(parent=PROJECT)),
        ]
        calls += live
        for call in live:
            assert (await call.read()).type == "conveyor.keepalive"
        await ops.cancel_task(secret_task.name, "stop")
        seen_by_viewer = await first_task_event(live[0], secret_task.name)
        seen_by_ops = await first_task_event(live[1], secret_task.name)
    finally:
        for call in calls:
            call.cancel()
    assert seen_by_viewer.type == seen_by_ops.type == "task.cancelled"
    assert as_json(seen_by_viewer.task.input) == SEEN_BY_VIEWER
    assert as_json(seen_by_ops.task.input) == INPUT


async def test_a_worker_leases_the_full_input(
    clients: dict[str, AsyncClient], secret_task: task_pb2.Task
) -> None:
    leases = await clients["worker"].lease_tasks(["mail"], worker="w1", wait_timeout=5)
    assert [lease.task.name for lease in leases] == [secret_task.name]
    assert as_json(leases[0].task.input) == INPUT


async def test_a_schedules_task_template_is_redacted_for_a_viewer(
    clients: dict[str, AsyncClient], secret_task: task_pb2.Task
) -> None:
    created = await clients["operator"].schedules.CreateSchedule(
        schedule_pb2.CreateScheduleRequest(
            parent=PROJECT,
            schedule=schedule_pb2.Schedule(
                spec=schedule_pb2.ScheduleSpec(
                    kind=enums_pb2.SCHEDULE_KIND_CRON, expression="0 3 * * *"
                ),
                task_template=schedule_pb2.TaskTemplate(
                    queue="mail", kind="email.send", input=value_of(INPUT)
                ),
            ),
        )
    )
    assert as_json(created.task_template.input) == INPUT
    request = schedule_pb2.GetScheduleRequest(name=created.name)
    seen = await clients["viewer"].schedules.GetSchedule(request)
    assert as_json(seen.task_template.input) == SEEN_BY_VIEWER
    listed = await clients["viewer"].schedules.ListSchedules(
        schedule_pb2.ListSchedulesRequest(parent=PROJECT)
    )
    assert [as_json(s.task_template.input) for s in listed.schedules] == [SEEN_BY_VIEWER]
    assert as_json((await clients["admin"].schedules.GetSchedule(request)).task_template.input)


async def until(check: Callable[[], Awaitable[bool]], within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_retries_keep_the_stored_input(
    clients: dict[str, AsyncClient], secret_task: task_pb2.Task
) -> None:
    viewer, ops = clients["viewer"], clients["operator"]
    await ops.cancel_task(secret_task.name, "stop")
    # The viewer reads it redacted; the operator retries it.
    assert as_json((await viewer.get_task(secret_task.name)).input) == SEEN_BY_VIEWER
    await ops.commands.RetryTask(
        command_pb2.RetryTaskRequest(parent=PROJECT, task=secret_task.name)
    )
    retried = await ops.get_task(secret_task.name)
    assert retried.state == enums_pb2.TASK_STATE_QUEUED
    assert as_json(retried.input) == INPUT

    await ops.cancel_task(secret_task.name, "again")
    command = await ops.commands.BatchRetryTasks(
        command_pb2.BatchRetryTasksRequest(
            parent=PROJECT, filter=task_pb2.TaskFilter(queues=["mail"]), max=10
        )
    )

    async def finished() -> bool:
        got = await ops.commands.GetCommand(command_pb2.GetCommandRequest(name=command.name))
        return got.status == enums_pb2.COMMAND_STATUS_SUCCEEDED

    await until(finished)
    again = await ops.get_task(secret_task.name)
    assert again.state == enums_pb2.TASK_STATE_QUEUED
    assert as_json(again.input) == INPUT
    # Leased by a worker: the input it runs with is the stored one.
    leases = await clients["worker"].lease_tasks(["mail"], worker="w1", wait_timeout=5)
    assert as_json(leases[0].task.input) == INPUT
