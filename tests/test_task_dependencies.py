"""Task.depends_on: a task waits (blocked_reason DEPENDENCIES) until every task it depends
on SUCCEEDED, then is QUEUED; dependency_failure_policy says what a failed, cancelled or
deleted dependency does (CANCEL by default, or RUN_ANYWAY). Against a real server."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx
import pytest
import pytest_asyncio

from conveyor.client import AsyncClient, InvalidArgumentError
from conveyor.client.cli import main
from conveyor.server.app import ConveyorServer
from conveyor.v1 import enums_pb2, task_pb2, task_service_pb2

PARENT = "projects/alpha"
SCHEDULED = enums_pb2.TASK_STATE_SCHEDULED
QUEUED = enums_pb2.TASK_STATE_QUEUED
SUCCEEDED = enums_pb2.TASK_STATE_SUCCEEDED
CANCELLED = enums_pb2.TASK_STATE_CANCELLED
DEPENDENCIES = enums_pb2.BLOCKED_REASON_DEPENDENCIES


@pytest_asyncio.fixture
async def client(server: ConveyorServer, keys: dict[str, str]) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(server.grpc_target, api_key=keys["admin"], project="alpha") as c:
        yield c


async def _create(
    c: AsyncClient, queue: str, depends_on: Sequence[task_pb2.Task] = (), **options: Any
) -> task_pb2.Task:
    if depends_on:
        options["depends_on"] = [d.name for d in depends_on]
    return await c.create_task("k", queue=queue, **options)


async def _run(c: AsyncClient, queue: str, *, fail: bool = False) -> task_pb2.Task:
    """Leases the one ready task of `queue` and completes it (or fails it for good)."""
    (lease,) = await c.lease_tasks([queue], worker="w-1", wait_timeout=5)
    if fail:
        return await c.fail_task(lease.task.name, lease.lease_id, message="no", retryable=False)
    return await c.complete_task(lease.task.name, lease.lease_id)


async def _ready(c: AsyncClient, queue: str) -> list[str]:
    """The names of the tasks of `queue` that are QUEUED now."""
    tasks = [t async for t in c.list_tasks(queues=[queue], states=["queued"])]
    return [t.name for t in tasks]


async def _event_types(server: ConveyorServer, name: str) -> list[str]:
    async with server.context.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT type FROM events WHERE project = 'alpha' AND subject = %s ORDER BY id",
            (name,),
        )
        return [r[0] for r in await cur.fetchall()]


async def _state(c: AsyncClient, task: task_pb2.Task) -> tuple[int, int]:
    got = await c.get_task(task.name)
    return got.state, got.blocked_reason


async def test_a_chain_runs_in_order(client: AsyncClient) -> None:
    a = await _create(client, "a")
    b = await _create(client, "b", [a])
    c = await _create(client, "c", [b])
    assert b.state == SCHEDULED and list(b.depends_on) == [a.name]
    assert b.dependency_failure_policy == enums_pb2.DEPENDENCY_FAILURE_POLICY_CANCEL
    assert await _state(client, b) == (SCHEDULED, DEPENDENCIES)
    assert await _state(client, c) == (SCHEDULED, DEPENDENCIES)
    assert await _ready(client, "b") == []

    await _run(client, "a")
    assert (await client.get_task(b.name)).state == QUEUED
    assert await _state(client, c) == (SCHEDULED, DEPENDENCIES)
    assert (await _run(client, "b")).name == b.name
    assert await _ready(client, "c") == [c.name]
    assert (await _run(client, "c")).state == SUCCEEDED

    # ListTasks says why a waiting task waits, and shows what it depends on.
    d = await _create(client, "d", [c, await _create(client, "e")])
    (listed,) = [t async for t in client.list_tasks(queues=["d"])]
    assert listed.blocked_reason == DEPENDENCIES
    assert list(listed.depends_on) == list(d.depends_on)


async def test_fan_out_then_fan_in(client: AsyncClient, server: ConveyorServer) -> None:
    root = await _create(client, "root")
    branches = [await _create(client, "branch", [root]) for _ in range(3)]
    join = await _create(client, "join", branches)
    assert await _ready(client, "branch") == []

    await _run(client, "root")
    assert sorted(await _ready(client, "branch")) == sorted(b.name for b in branches)
    for _ in range(2):
        await _run(client, "branch")
        assert await _state(client, join) == (SCHEDULED, DEPENDENCIES)
    await _run(client, "branch")
    assert await _ready(client, "join") == [join.name]
    assert await _event_types(server, join.name) == ["task.created", "task.queued"]


async def test_failure_cancels_dependents_down_the_chain(client: AsyncClient) -> None:
    a = await _create(client, "a")
    b = await _create(client, "b", [a])
    c = await _create(client, "c", [b])
    other = await _create(client, "other")
    anyway = await _create(client, "anyway", [a, other], dependency_failure_policy="run_anyway")
    assert anyway.dependency_failure_policy == enums_pb2.DEPENDENCY_FAILURE_POLICY_RUN_ANYWAY

    await _run(client, "a", fail=True)
    got_b = await client.get_task(b.name)
    assert got_b.state == CANCELLED
    assert got_b.state_reason == f"dependency {a.name} failed"
    assert got_b.error.type == "DEPENDENCY_FAILED"
    assert got_b.error.details["dependency"] == a.name
    assert got_b.HasField("end_time")
    got_c = await client.get_task(c.name)
    assert got_c.state == CANCELLED
    assert got_c.state_reason == f"dependency {b.name} was cancelled"
    # RUN_ANYWAY counts the failure as done and waits for the rest.
    assert await _state(client, anyway) == (SCHEDULED, DEPENDENCIES)
    await _run(client, "other")
    assert await _ready(client, "anyway") == [anyway.name]


async def test_a_cancelled_dependency_cancels_or_releases(client: AsyncClient) -> None:
    a = await _create(client, "a")
    strict = await _create(client, "strict", [a])
    lenient = await _create(client, "lenient", [a], dependency_failure_policy="run_anyway")
    await client.cancel_task(a.name, "not needed")
    got = await client.get_task(strict.name)
    assert (got.state, got.state_reason) == (CANCELLED, f"dependency {a.name} was cancelled")
    assert await _ready(client, "lenient") == [lenient.name]


async def test_dependencies_that_already_ended_count_at_create(client: AsyncClient) -> None:
    await _create(client, "done")
    done = await _run(client, "done")
    await _create(client, "failed")
    failed = await _run(client, "failed", fail=True)

    after_success = await _create(client, "x", [done])
    assert after_success.state == QUEUED and list(after_success.depends_on) == [done.name]
    after_failure = await _create(client, "y", [done, failed])
    assert after_failure.state == CANCELLED
    assert after_failure.state_reason == f"dependency {failed.name} failed"
    anyway = await _create(client, "z", [failed], dependency_failure_policy="run_anyway")
    assert anyway.state == QUEUED
    # A future schedule_time still holds once the dependencies are done.
    later = await _create(
        client,
        "later",
        [done],
        schedule_time=(await client.get_task(done.name)).end_time.ToDatetime().replace(year=2999),
    )
    assert await _state(client, later) == (SCHEDULED, enums_pb2.BLOCKED_REASON_SCHEDULED_IN_FUTURE)


async def test_approval_and_dependencies_both_hold(client: AsyncClient) -> None:
    a = await _create(client, "a")
    gated = await _create(client, "gated", [a], requires_approval=True)
    assert gated.state == enums_pb2.TASK_STATE_AWAITING_APPROVAL
    approved = await client.tasks.ApproveTask(task_service_pb2.ApproveTaskRequest(name=gated.name))
    assert approved.state == SCHEDULED
    assert await _state(client, gated) == (SCHEDULED, DEPENDENCIES)
    await _run(client, "a")
    assert await _ready(client, "gated") == [gated.name]

    # A dependency rejected at its approval is CANCELLED: its dependents follow.
    asked = await _create(client, "asked", requires_approval=True)
    after = await _create(client, "after", [asked])
    await client.tasks.RejectTask(task_service_pb2.RejectTaskRequest(name=asked.name, reason="no"))
    got = await client.get_task(after.name)
    assert (got.state, got.state_reason) == (CANCELLED, f"dependency {asked.name} was cancelled")


async def test_deleting_a_dependency(client: AsyncClient, server: ConveyorServer) -> None:
    # A dependency that succeeded and is deleted afterwards still counted as done.
    first = await _create(client, "first")
    second = await _create(client, "second")
    waiting = await _create(client, "waiting", [first, second])
    await _run(client, "first")
    deleted = await client.tasks.BatchDeleteTasks(
        task_service_pb2.BatchDeleteTasksRequest(parent=PARENT, names=[first.name])
    )
    assert deleted.deleted_count == 1
    assert await _state(client, waiting) == (SCHEDULED, DEPENDENCIES)
    await _run(client, "second")
    assert await _ready(client, "waiting") == [waiting.name]

    # One deleted before it ended (no RPC does that: the database is the one place
    # that can, and its trigger must still resolve the dependents).
    doomed = await _create(client, "doomed")
    strict = await _create(client, "strict", [doomed])
    lenient = await _create(client, "lenient", [doomed], dependency_failure_policy="run_anyway")
    async with server.context.pool.connection() as conn:
        await conn.execute(
            "DELETE FROM tasks WHERE project = 'alpha' AND id = %s",
            (uuid.UUID(doomed.name.rsplit("/", 1)[1]),),
        )
    got = await client.get_task(strict.name)
    assert (got.state, got.state_reason) == (CANCELLED, f"dependency {doomed.name} was deleted")
    assert await _ready(client, "lenient") == [lenient.name]


async def test_tree_shows_dependencies_beside_parents(client: AsyncClient) -> None:
    outside = await _create(client, "o")
    root = await _create(client, "r")
    child = await client.create_task(
        "k", queue="c", parent_task=root.name, depends_on=[outside.name]
    )
    sibling = await client.create_task(
        "k", queue="c", parent_task=root.name, depends_on=[child.name, outside.name]
    )
    tree = await client.tasks.GetTaskTree(task_service_pb2.GetTaskTreeRequest(name=sibling.name))
    assert [t.name for t in tree.tasks] == [root.name, child.name, sibling.name]
    assert list(tree.tasks[2].depends_on) == [child.name, outside.name]
    assert [t.name for t in tree.dependencies] == [outside.name]
    plain = await client.tasks.GetTaskTree(task_service_pb2.GetTaskTreeRequest(name=outside.name))
    assert list(plain.dependencies) == []


async def _violations(call: Any) -> list[tuple[str, str]]:
    with pytest.raises(InvalidArgumentError) as caught:
        await call
    return caught.value.field_violations


async def test_bad_dependencies_are_refused_and_create_nothing(client: AsyncClient) -> None:
    a = await _create(client, "a")
    missing = f"{PARENT}/tasks/{uuid.uuid4()}"
    assert await _violations(client.create_task("k", queue="v", depends_on=[a.name, missing])) == [
        ("task.depends_on[1]", "does not exist")
    ]
    found = await _violations(
        client.create_task(
            "k",
            queue="v",
            depends_on=["nonsense", f"projects/beta/tasks/{uuid.uuid4()}", a.name, a.name],
        )
    )
    assert [f for f, _ in found] == [
        "task.depends_on[0]",
        "task.depends_on[1]",
        "task.depends_on[3]",
    ]
    assert found[1][1] == "must be a task of projects/alpha"
    assert found[2][1] == "repeats task.depends_on[2]"
    too_many = [f"{PARENT}/tasks/{uuid.uuid4()}" for _ in range(101)]
    assert await _violations(client.create_task("k", queue="v", depends_on=too_many)) == [
        ("task.depends_on", "must name at most 100 tasks, not 101")
    ]
    assert await _violations(
        client.create_task("k", queue="v", dependency_failure_policy="run_anyway")
    ) == [("task.dependency_failure_policy", "is only allowed with depends_on")]
    assert [t async for t in client.list_tasks(queues=["v"])] == []


async def test_batch_items_with_dependencies(client: AsyncClient) -> None:
    a = await _create(client, "a")
    missing = f"{PARENT}/tasks/{uuid.uuid4()}"
    answer = await client.batch_create_tasks(
        [
            {"kind": "k", "queue": "batch", "depends_on": [a.name]},
            {"kind": "k", "queue": "batch", "depends_on": [missing]},
            {"kind": "k", "queue": "batch"},
            {
                "kind": "k",
                "queue": "batch",
                "depends_on": [a.name],
                "dedupe_policy": {"key": "once"},
            },
        ]
    )
    first, refused, plain, deduped = answer.results
    assert first.task.state == SCHEDULED and list(first.task.depends_on) == [a.name]
    assert refused.status.code == 3  # INVALID_ARGUMENT
    assert "requests[1].task.depends_on[0]" in refused.status.message
    assert plain.task.state == QUEUED
    assert deduped.task.state == SCHEDULED and list(deduped.task.depends_on) == [a.name]

    with pytest.raises(InvalidArgumentError):
        await client.batch_create_tasks(
            [
                {"kind": "k", "queue": "atomic", "depends_on": [a.name]},
                {"kind": "k", "queue": "atomic", "depends_on": [missing]},
            ],
            atomic=True,
        )
    assert [t async for t in client.list_tasks(queues=["atomic"])] == []
    await _run(client, "a")
    assert sorted(await _ready(client, "batch")) == sorted(
        [first.task.name, plain.task.name, deduped.task.name]
    )


async def test_cli_creates_with_depends_on_and_shows_the_tree(
    server: ConveyorServer, keys: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["--target", server.grpc_target, "--key", keys["operator"], "--project", "alpha"]

    async def cli(*argv: str) -> str:
        # The blocking CLI runs in a thread: the server shares this event loop.
        code = await asyncio.to_thread(main, [*base, *argv])
        out, err = capsys.readouterr()
        assert code == 0, err
        return out

    first = json.loads(await cli("tasks", "create", "k", "--queue", "cli"))
    short_id = first["name"].rsplit("/", 1)[1]
    made = json.loads(
        await cli(
            "tasks", "create", "k", "--queue", "cli", "--depends-on", short_id,
            "--on-dependency-failure", "run_anyway",
        )
    )  # fmt: skip
    assert made["depends_on"] == [first["name"]]
    assert made["dependency_failure_policy"] == "DEPENDENCY_FAILURE_POLICY_RUN_ANYWAY"
    assert made["state"] == "TASK_STATE_SCHEDULED"
    tree = json.loads(await cli("tasks", "tree", made["name"], "-o", "json"))
    assert [t["name"] for t in tree] == [made["name"], first["name"]]


async def test_rest_create_with_depends_on(server: ConveyorServer, keys: dict[str, str]) -> None:
    headers = {"Authorization": f"Bearer {keys['operator']}"}
    async with httpx.AsyncClient(base_url=server.http_base_url, headers=headers) as http:
        first = (await http.post("/v1/projects/alpha/tasks", json={"kind": "k"})).json()
        made = await http.post(
            "/v1/projects/alpha/tasks",
            json={
                "kind": "k",
                "dependsOn": [first["name"]],
                "dependencyFailurePolicy": "RUN_ANYWAY",
            },
        )
        assert made.status_code == 200, made.text
        assert made.json()["depends_on"] == [first["name"]]
        assert made.json()["dependency_failure_policy"] == "DEPENDENCY_FAILURE_POLICY_RUN_ANYWAY"
        refused = await http.post(
            "/v1/projects/alpha/tasks",
            json={"kind": "k", "dependsOn": [f"projects/alpha/tasks/{uuid.uuid4()}"]},
        )
        assert refused.status_code == 400
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert refused.json()["errors"] == [
            {"field": "task.depends_on[0]", "description": "does not exist"}
        ]
