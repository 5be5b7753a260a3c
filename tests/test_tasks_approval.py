"""ApproveTask, RejectTask, pending approvals as a ListTasks filter, and approval timeouts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
import pytest_asyncio
from google.protobuf import duration_pb2, timestamp_pb2

from conveyor.client import AsyncClient, FailedPreconditionError, PermissionDeniedError
from conveyor.server.app import ConveyorServer
from conveyor.server.loops.approvals import ApprovalTimeouts
from conveyor.server.store import approvals, leases
from conveyor.v1 import enums_pb2, task_pb2, task_service_pb2

PARENT = "projects/alpha"


@pytest_asyncio.fixture
async def ops(server: ConveyorServer, keys: dict[str, str]) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(server.grpc_target, api_key=keys["operator"]) as c:
        yield c


async def _create(client: AsyncClient, **fields: Any) -> task_pb2.Task:
    return await client.tasks.CreateTask(
        task_service_pb2.CreateTaskRequest(
            parent=PARENT, task=task_pb2.Task(kind="k", requires_approval=True, **fields)
        )
    )


async def _events(database_url: str, name: str) -> list[str]:
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cur = await conn.execute("SELECT type FROM events WHERE subject = %s ORDER BY id", (name,))
        return [r[0] for r in await cur.fetchall()]


async def _audit(database_url: str, name: str) -> list[tuple[Any, ...]]:
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cur = await conn.execute(
            "SELECT verb, args, issued_by FROM commands WHERE target = %s ORDER BY sequence",
            (name,),
        )
        return list(await cur.fetchall())


async def test_approve_queues_the_task_and_records_the_approver(
    ops: AsyncClient, database_url: str
) -> None:
    task = await _create(ops)
    assert task.state == enums_pb2.TASK_STATE_AWAITING_APPROVAL
    pending = await ops.tasks.ListTasks(
        task_service_pb2.ListTasksRequest(
            parent=PARENT,
            filter=task_pb2.TaskFilter(states=[enums_pb2.TASK_STATE_AWAITING_APPROVAL]),
        )
    )
    assert [t.name for t in pending.tasks] == [task.name]

    approved = await ops.tasks.ApproveTask(
        task_service_pb2.ApproveTaskRequest(name=task.name, comment="looks good")
    )
    assert approved.state == enums_pb2.TASK_STATE_QUEUED
    assert approved.approval.approved
    assert approved.approval.comment == "looks good"
    assert approved.approval.approver not in ("", "system")
    assert approved.approval.HasField("decide_time")
    got = await ops.tasks.GetTask(task_service_pb2.GetTaskRequest(name=task.name))
    assert got.approval == approved.approval
    assert (await _events(database_url, task.name))[-1] == "task.queued"
    audit = await _audit(database_url, task.name)
    assert [(verb, args) for verb, args, _ in audit] == [
        ("APPROVE_TASK", {"comment": "looks good"})
    ]
    pending = await ops.tasks.ListTasks(
        task_service_pb2.ListTasksRequest(
            parent=PARENT,
            filter=task_pb2.TaskFilter(states=[enums_pb2.TASK_STATE_AWAITING_APPROVAL]),
        )
    )
    assert list(pending.tasks) == []


async def test_approve_with_a_future_schedule_time_schedules_it(ops: AsyncClient) -> None:
    later = timestamp_pb2.Timestamp()
    later.GetCurrentTime()
    later.seconds += 3600
    task = await _create(ops, schedule_time=later)
    approved = await ops.tasks.ApproveTask(task_service_pb2.ApproveTaskRequest(name=task.name))
    assert approved.state == enums_pb2.TASK_STATE_SCHEDULED


async def test_reject_cancels_with_the_reason(ops: AsyncClient, database_url: str) -> None:
    task = await _create(ops)
    rejected = await ops.tasks.RejectTask(
        task_service_pb2.RejectTaskRequest(name=task.name, reason="not today")
    )
    assert rejected.state == enums_pb2.TASK_STATE_CANCELLED
    assert rejected.state_reason == "not today"
    assert not rejected.approval.approved
    assert rejected.approval.comment == "not today"
    assert (await _events(database_url, task.name))[-1] == "task.cancelled"
    audit = await _audit(database_url, task.name)
    assert [(verb, args) for verb, args, _ in audit] == [("REJECT_TASK", {"reason": "not today"})]
    # Decided once: a second decision is refused and records nothing.
    with pytest.raises(FailedPreconditionError):
        await ops.tasks.ApproveTask(task_service_pb2.ApproveTaskRequest(name=task.name))
    assert len(await _audit(database_url, task.name)) == 1


async def test_a_task_not_awaiting_approval_cannot_be_decided(ops: AsyncClient) -> None:
    task = await ops.tasks.CreateTask(
        task_service_pb2.CreateTaskRequest(parent=PARENT, task=task_pb2.Task(kind="k"))
    )
    with pytest.raises(FailedPreconditionError):
        await ops.tasks.ApproveTask(task_service_pb2.ApproveTaskRequest(name=task.name))
    with pytest.raises(FailedPreconditionError):
        await ops.tasks.RejectTask(task_service_pb2.RejectTaskRequest(name=task.name))


async def test_approval_needs_the_operator_role(
    server: ConveyorServer, keys: dict[str, str], ops: AsyncClient
) -> None:
    task = await _create(ops)
    async with AsyncClient(server.grpc_target, api_key=keys["worker"]) as worker:
        with pytest.raises(PermissionDeniedError):
            await worker.tasks.ApproveTask(task_service_pb2.ApproveTaskRequest(name=task.name))
        with pytest.raises(PermissionDeniedError):
            await worker.tasks.RejectTask(task_service_pb2.RejectTaskRequest(name=task.name))


@pytest.mark.parametrize(
    ("action", "state"),
    [
        (enums_pb2.APPROVAL_ACTION_APPROVE, enums_pb2.TASK_STATE_QUEUED),
        (enums_pb2.APPROVAL_ACTION_REJECT, enums_pb2.TASK_STATE_CANCELLED),
    ],
)
async def test_approval_timeout_applies_its_action(
    server: ConveyorServer, ops: AsyncClient, database_url: str, action: int, state: int
) -> None:
    task = await _create(
        ops,
        approval_timeout=duration_pb2.Duration(seconds=1),
        approval_timeout_action=action,
    )
    # Its second has passed (rather than sleeping through it).
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await conn.execute(
            "UPDATE tasks SET create_time = create_time - interval '2 seconds' WHERE id = %s",
            (task.name.rsplit("/", 1)[1],),
        )
    waiting = await _create(
        ops,
        approval_timeout=duration_pb2.Duration(seconds=3600),
        approval_timeout_action=action,
    )
    loop = ApprovalTimeouts(server.context.pool, batch=1)
    await loop.run_once()  # the server's own loop may have decided it already
    got = await ops.tasks.GetTask(task_service_pb2.GetTaskRequest(name=task.name))
    assert got.state == state
    assert got.approval.approver == "system"
    assert got.approval.approved == (action == enums_pb2.APPROVAL_ACTION_APPROVE)
    still = await ops.tasks.GetTask(task_service_pb2.GetTaskRequest(name=waiting.name))
    assert still.state == enums_pb2.TASK_STATE_AWAITING_APPROVAL


def _nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    return [plan, *(n for child in plan.get("Plans", []) for n in _nodes(child))]


async def test_the_timeout_loop_reads_only_waiting_tasks(database_url: str) -> None:
    """The plan a pool connection keeps for the loop's statement (generic, as the pool's
    force_generic_plan makes it) reads tasks_approval_due_idx: a state test on a
    parameter cannot use that partial index, and its generic plan scanned every task of
    every project once a second (77-123 ms of statement time per pass in the bench, at
    ~150,000 tasks, load 3-6)."""
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        text = approvals._statement("timed_out").as_string(conn)
        cur = await conn.execute(
            "EXPLAIN (GENERIC_PLAN, FORMAT JSON) " + leases._compact(text).text
        )
        row = await cur.fetchone()
    assert row is not None
    due = next(p for p in _nodes(row[0][0]["Plan"]) if p.get("Subplan Name") == "CTE due")
    scans = [(p["Node Type"], p.get("Index Name")) for p in _nodes(due) if "Scan" in p["Node Type"]]
    assert scans == [("Index Scan", "tasks_approval_due_idx")], scans
