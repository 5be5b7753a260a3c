"""CancelTask from every state, per the transition table, and its race with a lease."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
import pytest_asyncio
from google.protobuf import timestamp_pb2

from conveyor.client import (
    AsyncClient,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
)
from conveyor.server import states
from conveyor.server.app import ConveyorServer
from conveyor.server.states import State
from conveyor.v1 import enums_pb2, task_pb2, task_service_pb2

PARENT = "projects/alpha"


@pytest_asyncio.fixture
async def client(server: ConveyorServer, keys: dict[str, str]) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(server.grpc_target, api_key=keys["operator"]) as c:
        yield c


def _id(name: str) -> uuid.UUID:
    return uuid.UUID(name.rsplit("/", 1)[1])


async def _create(client: AsyncClient, **fields: Any) -> task_pb2.Task:
    return await client.tasks.CreateTask(
        task_service_pb2.CreateTaskRequest(parent=PARENT, task=task_pb2.Task(kind="k", **fields))
    )


async def _cancel(client: AsyncClient, name: str, reason: str = "") -> task_pb2.Task:
    return await client.tasks.CancelTask(
        task_service_pb2.CancelTaskRequest(name=name, reason=reason)
    )


_FORCE = {
    State.RUNNING: (
        "state = 'RUNNING', attempt = 1, worker = 'w1', lease_id = gen_random_uuid(),"
        " lease_expire_time = now() + interval '1 minute', start_time = now()"
    ),
    State.SUCCEEDED: "state = 'SUCCEEDED', end_time = now()",
    State.FAILED: "state = 'FAILED', end_time = now()",
    State.CANCELLED: "state = 'CANCELLED', end_time = now()",
    State.INTERRUPTED: "state = 'INTERRUPTED', end_time = now()",
}


async def _in_state(client: AsyncClient, database_url: str, state: State) -> task_pb2.Task:
    """A task in `state`: created there, or moved there by SQL as a worker would."""
    if state is State.SCHEDULED:
        later = timestamp_pb2.Timestamp()
        later.FromDatetime(datetime.now(UTC) + timedelta(hours=1))
        return await _create(client, schedule_time=later)
    if state is State.AWAITING_APPROVAL:
        return await _create(client, requires_approval=True)
    task = await _create(client)
    if state is not State.QUEUED:
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            await conn.execute(
                f"UPDATE tasks SET {_FORCE[state]} WHERE id = %s",
                (_id(task.name),),
            )
    return task


async def _events(database_url: str, name: str) -> list[tuple[str, Any, Any]]:
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cur = await conn.execute(
            "SELECT type, task ->> 'state', data FROM events WHERE subject = %s ORDER BY id",
            (name,),
        )
        return list(await cur.fetchall())


@pytest.mark.parametrize("state", list(State), ids=lambda s: s.value)
async def test_cancel_from_each_state(client: AsyncClient, database_url: str, state: State) -> None:
    task = await _in_state(client, database_url, state)
    before = await client.tasks.GetTask(task_service_pb2.GetTaskRequest(name=task.name))

    if (state, "cancel") in states.TABLE:
        cancelled = await _cancel(client, task.name, reason="not needed")
        assert cancelled.state == enums_pb2.TASK_STATE_CANCELLED
        assert cancelled.state_reason == "not needed"
        assert cancelled.HasField("end_time")
        assert (await _events(database_url, task.name))[-1] == (
            "task.cancelled",
            "CANCELLED",
            {"reason": "not needed"},
        )
    elif state is State.RUNNING:
        # Not a transition: the worker is told on its next heartbeat and ends it.
        asked = await _cancel(client, task.name, reason="stop")
        assert asked.state == enums_pb2.TASK_STATE_RUNNING
        assert asked.cancel_requested
        assert asked.state_reason == "stop"
        again = await _cancel(client, task.name, reason="second reason")
        assert again.cancel_requested and again.state_reason == "stop"
        assert [e[0] for e in await _events(database_url, task.name)] == ["task.created"]
    else:
        assert state.terminal
        with pytest.raises(FailedPreconditionError) as caught:
            await _cancel(client, task.name)
        assert caught.value.reason == "TASK_STATE_CONFLICT"
        assert caught.value.precondition_violations[0][1] == task.name
        after = await client.tasks.GetTask(task_service_pb2.GetTaskRequest(name=task.name))
        assert after == before


async def test_cancel_checks_its_input(
    client: AsyncClient, keys: dict[str, str], server: ConveyorServer
) -> None:
    with pytest.raises(NotFoundError):
        await _cancel(client, f"projects/alpha/tasks/{uuid.uuid4()}")
    with pytest.raises(InvalidArgumentError) as caught:
        await _cancel(client, "projects/alpha/tasks/x")
    assert caught.value.field_violations[0][0] == "name"
    task = await _create(client)
    with pytest.raises(InvalidArgumentError) as caught:
        await _cancel(client, task.name, reason="r" * 1001)
    assert caught.value.field_violations[0][0] == "reason"
    async with AsyncClient(server.grpc_target, api_key=keys["viewer"]) as viewer:
        with pytest.raises(PermissionDeniedError):
            await _cancel(viewer, task.name)


async def _blocked_by(database_url: str, pid: int, within: float = 10) -> None:
    """Returns once some backend waits for a lock that backend `pid` holds."""
    async with (
        await psycopg.AsyncConnection.connect(database_url, autocommit=True) as watcher,
        asyncio.timeout(within),
    ):
        while True:
            cur = await watcher.execute(
                "SELECT 1 FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))", (pid,)
            )
            if await cur.fetchone() is not None:
                return
            await asyncio.sleep(0.01)


async def test_a_task_that_starts_while_being_cancelled_is_not_cancelled(
    client: AsyncClient, database_url: str
) -> None:
    """The guarded UPDATE waits for the lease, sees RUNNING, and asks the worker instead."""
    task = await _create(client)
    async with await psycopg.AsyncConnection.connect(database_url) as lease:
        await lease.execute(
            f"UPDATE tasks SET {_FORCE[State.RUNNING]} WHERE id = %s",
            (_id(task.name),),
        )
        # The lease holds the row lock; the cancel blocks on it.
        cancelling = asyncio.create_task(_cancel(client, task.name, reason="race"))
        await _blocked_by(database_url, lease.info.backend_pid)
        assert not cancelling.done()
        await lease.commit()
    result = await cancelling
    assert result.state == enums_pb2.TASK_STATE_RUNNING
    assert result.cancel_requested
    assert [e[0] for e in await _events(database_url, task.name)] == ["task.created"]
