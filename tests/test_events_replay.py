"""A task event stores what its transition changed (0012); a replay still shows the task
as it was at that event, also after its input was replaced by a retry."""

from __future__ import annotations

import psycopg
from google.protobuf import struct_pb2

from conveyor.client import AsyncClient
from conveyor.client._json import from_value
from conveyor.server.app import ConveyorServer
from conveyor.v1 import command_pb2, enums_pb2

S = enums_pb2
P = "projects/alpha"


async def test_a_replayed_event_shows_the_task_as_it_was(
    server: ConveyorServer, keys: dict[str, str], database_url: str
) -> None:
    target = server.grpc_target
    async with (
        AsyncClient(target, api_key=keys["operator"], project="alpha") as ops,
        AsyncClient(target, api_key=keys["worker"], project="alpha") as work,
    ):
        task = await ops.create_task("k", {"v": 1}, queue="q", labels={"team": "a"}, priority=3)
        (first,) = await work.lease_tasks(["q"], worker="w-1")
        await work.fail_task(task.name, first.lease_id, message="boom", retryable=False)
        await ops.commands.RetryTask(
            command_pb2.RetryTaskRequest(
                parent=P, task=task.name, override_input=struct_pb2.Value(string_value="two")
            )
        )
        (second,) = await work.lease_tasks(["q"], worker="w-2")
        await work.complete_task(task.name, second.lease_id, {"ok": True})
        events = [e async for e in ops.list_events(tasks=[task.name])]

    seen = [
        (e.type, e.task.state, e.task.attempt, e.task.worker, from_value(e.task.input))
        for e in events
    ]
    assert seen == [
        ("task.created", S.TASK_STATE_QUEUED, 0, "", {"v": 1}),
        ("task.started", S.TASK_STATE_RUNNING, 1, "projects/alpha/workers/w-1", {"v": 1}),
        ("task.failed", S.TASK_STATE_FAILED, 1, "projects/alpha/workers/w-1", {"v": 1}),
        ("task.queued", S.TASK_STATE_QUEUED, 1, "", "two"),
        ("task.started", S.TASK_STATE_RUNNING, 2, "projects/alpha/workers/w-2", "two"),
        ("task.succeeded", S.TASK_STATE_SUCCEEDED, 2, "projects/alpha/workers/w-2", "two"),
    ]
    # The fixed fields come from the task, on every event.
    assert {(e.task.name, e.task.kind, e.task.queue, e.task.priority) for e in events} == {
        (task.name, "k", "q", 3)
    }
    assert all(dict(e.task.labels) == {"team": "a"} for e in events)
    assert events[2].task.error.message == "boom" and not events[1].task.HasField("error")
    assert from_value(events[5].task.result) == {"ok": True}
    assert not events[4].task.HasField("result")

    # What is stored: the change only; the input where it was set (create, retry).
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cur = await conn.execute(
            "SELECT type, task ? 'input', task ? 'labels', task ? 'kind' FROM events "
            "WHERE project = 'alpha' AND subject = %s ORDER BY id",
            (task.name,),
        )
        stored = await cur.fetchall()
    assert [(row[0], row[1]) for row in stored] == [
        ("task.created", True),
        ("task.started", False),
        ("task.failed", False),
        ("task.queued", True),
        ("task.started", False),
        ("task.succeeded", False),
    ]
    assert not any(row[2] or row[3] for row in stored)
