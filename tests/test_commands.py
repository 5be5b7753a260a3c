"""CommandService end to end: the audit chain and its tamper matrix, idempotency,
retry and bulk retry, confirmed purge, worker control over Connect, and roles."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import psycopg
import pytest
from google.protobuf import duration_pb2, field_mask_pb2, struct_pb2

from conveyor.client import AsyncClient, TaskContext, Worker
from conveyor.client._json import from_value
from conveyor.client.errors import ConveyorError
from conveyor.server.app import ConveyorServer
from conveyor.v1 import command_pb2, enums_pb2, queue_pb2, task_pb2

S = enums_pb2
P = "projects/alpha"


@contextlib.asynccontextmanager
async def client(server: ConveyorServer, key: str) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(server.grpc_target, api_key=key, project="alpha") as c:
        yield c


async def until(check: Callable[[], Awaitable[bool]], within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def wait_status(
    c: AsyncClient, name: str, statuses: set[int], within: float = 20.0
) -> command_pb2.Command:
    found: list[command_pb2.Command] = []

    async def check() -> bool:
        command = await c.commands.GetCommand(command_pb2.GetCommandRequest(name=name))
        found[:] = [command]
        return command.status in statuses

    await until(check, within)
    return found[0]


async def verify(c: AsyncClient, parent: str = P) -> command_pb2.VerifyAuditLogResponse:
    return await c.commands.VerifyAuditLog(command_pb2.VerifyAuditLogRequest(parent=parent))


async def cancelled_task(c: AsyncClient, **options: Any) -> task_pb2.Task:
    task = await c.create_task("job", {"n": 1}, queue="parked", **options)
    return await c.cancel_task(task.name)


# The chain ----------------------------------------------------------------------


async def test_chain_links_and_verifies(server: ConveyorServer, keys: dict[str, str]) -> None:
    async with client(server, keys["admin"]) as admin:
        # The fixture's project and key creation are already in the chain.
        base = (await verify(admin)).verified_count
        names = []
        for i in range(3):
            command = await admin.commands.SetRateLimit(
                command_pb2.SetRateLimitRequest(parent=P, kind=f"k{i}", rate_limit="10/m")
            )
            names.append(command)
        first, second, third = names
        assert [c.sequence for c in names] == [base + 1, base + 2, base + 3]
        assert first.name == f"{P}/commands/{base + 1}"
        assert second.prev_digest == first.digest and third.prev_digest == second.digest
        assert first.status == S.COMMAND_STATUS_SUCCEEDED
        assert first.verb == S.COMMAND_VERB_SET_RATE_LIMIT
        assert first.issued_by.startswith(P + "/apiKeys/")
        assert len(first.signature) == 64
        verdict = await verify(admin)
        assert (verdict.ok, verdict.verified_count, verdict.first_bad_sequence) == (
            True,
            base + 3,
            0,
        )

        listed = await admin.commands.ListCommands(
            command_pb2.ListCommandsRequest(parent=P, page_size=2)
        )
        assert [c.sequence for c in listed.commands] == [base + 3, base + 2]
        rest = await admin.commands.ListCommands(
            command_pb2.ListCommandsRequest(
                parent=P, page_size=2, page_token=listed.next_page_token
            )
        )
        assert rest.commands[0].sequence == base + 1
        filtered = await admin.commands.ListCommands(
            command_pb2.ListCommandsRequest(
                parent=P,
                filter=command_pb2.CommandFilter(
                    verbs=[S.COMMAND_VERB_RETRY_TASK], statuses=[S.COMMAND_STATUS_SUCCEEDED]
                ),
            )
        )
        assert list(filtered.commands) == []


@pytest.mark.parametrize("tamper", ["alter", "delete", "swap", "delete_last"])
async def test_tamper_matrix(
    server: ConveyorServer, keys: dict[str, str], database_url: str, tamper: str
) -> None:
    async with client(server, keys["admin"]) as admin:
        b = (await verify(admin)).verified_count  # the fixture's own commands come first
        for i in range(5):
            await admin.commands.SetRateLimit(
                command_pb2.SetRateLimitRequest(parent=P, kind=f"k{i}", rate_limit="10/m")
            )
        assert (await verify(admin)).ok
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            # The trigger refuses rewriting the chain.
            at = {"s2": b + 2, "s3": b + 3, "s5": b + 5}
            where = "project = 'alpha' AND sequence = %s"
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                await conn.execute(f"UPDATE commands SET target = 'x' WHERE {where}", (at["s3"],))
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                await conn.execute(f"DELETE FROM commands WHERE {where}", (at["s3"],))
            # A superuser who switches it off is still caught.
            await conn.execute("ALTER TABLE commands DISABLE TRIGGER commands_immutable")
            if tamper == "alter":
                await conn.execute(
                    f'UPDATE commands SET args = \'{{"kind": "k9"}}\' WHERE {where}', (at["s3"],)
                )
                expected = at["s3"]
            elif tamper == "delete":
                await conn.execute(f"DELETE FROM commands WHERE {where}", (at["s3"],))
                expected = at["s3"]
            elif tamper == "delete_last":
                await conn.execute(f"DELETE FROM commands WHERE {where}", (at["s5"],))
                expected = at["s5"]
            else:
                await conn.execute(
                    """UPDATE commands c SET verb = o.verb, target = o.target, args = o.args,
                           issued_by = o.issued_by, idempotency_key = o.idempotency_key,
                           create_time = o.create_time, prev_digest = o.prev_digest,
                           digest = o.digest, signature = o.signature
                       FROM commands o
                       WHERE c.project = 'alpha' AND o.project = 'alpha'
                         AND ((c.sequence = %(a)s AND o.sequence = %(b)s)
                              OR (c.sequence = %(b)s AND o.sequence = %(a)s))""",
                    {"a": at["s2"], "b": at["s3"]},
                )
                expected = at["s2"]
            await conn.execute("ALTER TABLE commands ENABLE TRIGGER commands_immutable")
        verdict = await verify(admin)
        assert not verdict.ok
        assert verdict.first_bad_sequence == expected
        assert verdict.verified_count == expected - 1


# Retry and idempotency ------------------------------------------------------------


async def test_retry_task_requeues_as_a_new_attempt(
    server: ConveyorServer, keys: dict[str, str]
) -> None:
    async with client(server, keys["operator"]) as ops:
        base = (await verify(ops)).verified_count
        task = await cancelled_task(ops)
        command = await ops.commands.RetryTask(
            command_pb2.RetryTaskRequest(
                parent=P, task=task.name, override_input=struct_pb2.Value(string_value="again")
            )
        )
        assert command.sequence == base + 2  # after the cancel
        assert command.status == S.COMMAND_STATUS_SUCCEEDED
        assert command.verb == S.COMMAND_VERB_RETRY_TASK and command.target == task.name
        assert from_value(command.result.fields["task"]) == task.name
        again = await ops.get_task(task.name)
        assert again.state == S.TASK_STATE_QUEUED
        assert from_value(again.input) == "again"

        # Not failed, cancelled or interrupted: refused, nothing recorded.
        with pytest.raises(ConveyorError) as refused:
            await ops.commands.RetryTask(command_pb2.RetryTaskRequest(parent=P, task=task.name))
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        too_big = struct_pb2.Value(string_value="x" * (65 * 1024))
        with pytest.raises(ConveyorError) as invalid:
            await ops.commands.RetryTask(
                command_pb2.RetryTaskRequest(parent=P, task=task.name, override_input=too_big)
            )
        assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (await verify(ops)).ok


async def test_racing_idempotent_retries_act_once(
    server: ConveyorServer, keys: dict[str, str], database_url: str
) -> None:
    async with client(server, keys["operator"]) as ops:
        task = await cancelled_task(ops)
        request = command_pb2.RetryTaskRequest(parent=P, task=task.name, idempotency_key="k-1")
        answers = await asyncio.gather(*(ops.commands.RetryTask(request) for _ in range(8)))
        assert len({a.name for a in answers}) == 1
        assert len({a.sequence for a in answers}) == 1
        again = await ops.commands.RetryTask(request)
        assert again.name == answers[0].name
        async with await psycopg.AsyncConnection.connect(database_url) as conn:
            cur = await conn.execute(
                "SELECT count(*) FROM events WHERE type = 'task.queued' AND subject = %s",
                (task.name,),
            )
            assert (await cur.fetchone()) == (1,)
    # Another principal's same key is its own command: it acts (and is refused, as the
    # task is queued again already).
    async with client(server, keys["admin"]) as admin:
        with pytest.raises(ConveyorError) as other:
            await admin.commands.RetryTask(request)
        assert other.value.code() == grpc.StatusCode.FAILED_PRECONDITION


# Purge -----------------------------------------------------------------------------


async def test_purge_with_fresh_and_stale_tokens_and_force(
    server: ConveyorServer, keys: dict[str, str]
) -> None:
    async with client(server, keys["admin"]) as admin, client(server, keys["operator"]) as ops:
        tasks = [await ops.create_task("job", i, queue="purge-me") for i in range(3)]
        queue = await admin.get_queue("purge-me")
        assert queue.stats.queued == 3
        token = queue.purge_confirm_token
        await ops.create_task("job", 3, queue="purge-me")  # the depth moves on
        request = command_pb2.PurgeQueueRequest(parent=P, queue="purge-me", confirm_token=token)
        with pytest.raises(ConveyorError) as stale:
            await admin.commands.PurgeQueue(request)
        assert stale.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert stale.value.reason == "PURGE_TOKEN_STALE"
        assert stale.value.metadata["queued_depth"] == "4"
        assert "4" in str(stale.value.precondition_violations[0])
        assert (await ops.get_task(tasks[0].name)).state == S.TASK_STATE_QUEUED

        with pytest.raises(ConveyorError) as denied:
            await ops.commands.PurgeQueue(request)
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED

        fresh = (await admin.get_queue("purge-me")).purge_confirm_token
        command = await admin.commands.PurgeQueue(
            command_pb2.PurgeQueueRequest(parent=P, queue="purge-me", confirm_token=fresh)
        )
        assert command.status == S.COMMAND_STATUS_SUCCEEDED
        assert from_value(command.result.fields["purged"]) == 4
        gone = await ops.get_task(tasks[0].name)
        assert (gone.state, gone.state_reason) == (S.TASK_STATE_CANCELLED, "purged")
        assert (await admin.get_queue("purge-me")).stats.queued == 0

        await ops.create_task("job", 5, queue="purge-me")
        forced = await admin.commands.PurgeQueue(
            command_pb2.PurgeQueueRequest(parent=P, queue="purge-me", force=True)
        )
        assert from_value(forced.result.fields["purged"]) == 1
        with pytest.raises(ConveyorError) as missing:
            await admin.commands.PurgeQueue(command_pb2.PurgeQueueRequest(parent=P, queue="q"))
        assert missing.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (await verify(admin)).ok


# Bulk retry --------------------------------------------------------------------------


async def test_batch_retry_of_5000_while_workers_run(
    server: ConveyorServer, keys: dict[str, str], database_url: str
) -> None:
    async with client(server, keys["operator"]) as ops, client(server, keys["worker"]) as work:
        for start in range(0, 5000, 1000):
            specs = [
                {"kind": "bulk", "input": i, "queue": "bulk"} for i in range(start, start + 1000)
            ]
            await ops.batch_create_tasks(specs)  # type: ignore[arg-type]
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            await conn.execute(
                "UPDATE tasks SET state = 'FAILED', end_time = now(), attempt = 1"
                " WHERE queue = 'bulk'"
            )
        worker = Worker(work, queues=["bulk", "default"], concurrency=4, worker_id="bulk-w")

        @worker.task("bulk")
        def bulk(ctx: TaskContext) -> int:
            return int(ctx.input)

        @worker.task("job")
        def job(ctx: TaskContext) -> int:
            return 1

        running = asyncio.create_task(worker.arun())
        try:
            other = await ops.create_task("job", 1)
            began = time.monotonic()
            command = await ops.commands.BatchRetryTasks(
                command_pb2.BatchRetryTasksRequest(
                    parent=P, filter=task_pb2.TaskFilter(queues=["bulk"]), max=10000
                )
            )
            assert command.status == S.COMMAND_STATUS_ISSUED
            done = await wait_status(ops, command.name, {S.COMMAND_STATUS_SUCCEEDED}, within=60)
            assert time.monotonic() - began < 60
            assert from_value(done.result.fields["retried"]) == 5000
            # The lease path was not starved meanwhile.
            assert (await ops.wait_for_task(other.name, timeout=15)).state == (
                S.TASK_STATE_SUCCEEDED
            )
            with pytest.raises(ConveyorError) as invalid:
                await ops.commands.BatchRetryTasks(
                    command_pb2.BatchRetryTasksRequest(parent=P, max=10001)
                )
            assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        finally:
            await worker.stop(2)
            await running


# Worker control ------------------------------------------------------------------------


def _timeout(seconds: int) -> duration_pb2.Duration:
    return duration_pb2.Duration(seconds=seconds)


async def test_worker_control_end_to_end(server: ConveyorServer, keys: dict[str, str]) -> None:
    async with (
        client(server, keys["admin"]) as admin,
        client(server, keys["operator"]) as ops,
        client(server, keys["worker"]) as work,
    ):
        # Issued before the worker connects: delivered when it does.
        early = await admin.commands.ResizePool(
            command_pb2.ResizePoolRequest(parent=P, worker="ctl", delta=2)
        )
        assert early.status == S.COMMAND_STATUS_ISSUED
        worker = Worker(work, queues=["default"], concurrency=1, worker_id="ctl")

        @worker.task("job")
        def job(ctx: TaskContext) -> str:
            return "ok"

        running = asyncio.create_task(worker.arun())
        try:
            done = await wait_status(admin, early.name, {S.COMMAND_STATUS_SUCCEEDED})
            assert done.dispatch_time.seconds and done.finish_time.seconds
            assert worker.concurrency == 3
            assert from_value(done.result.fields["concurrency"]) == 3

            added = await admin.commands.AddConsumer(
                command_pb2.AddConsumerRequest(parent=P, worker="ctl", queue="extra")
            )
            await wait_status(admin, added.name, {S.COMMAND_STATUS_SUCCEEDED})
            assert worker.queues == ["default", "extra"]
            extra = await ops.create_task("job", None, queue="extra")
            assert (await ops.wait_for_task(extra.name, timeout=15)).state == (
                S.TASK_STATE_SUCCEEDED
            )

            removed = await admin.commands.CancelConsumer(
                command_pb2.CancelConsumerRequest(
                    parent=P, worker="projects/alpha/workers/ctl", queue="extra"
                )
            )
            await wait_status(admin, removed.name, {S.COMMAND_STATUS_SUCCEEDED})
            assert worker.queues == ["default"]
            last = await admin.commands.CancelConsumer(
                command_pb2.CancelConsumerRequest(parent=P, worker="ctl", queue="default")
            )
            refused = await wait_status(admin, last.name, {S.COMMAND_STATUS_FAILED})
            assert "at least one queue" in refused.error.message

            generation = worker._generation
            restart = await admin.commands.RestartWorker(
                command_pb2.RestartWorkerRequest(parent=P, worker="ctl")
            )
            await wait_status(admin, restart.name, {S.COMMAND_STATUS_SUCCEEDED})

            async def reconnected() -> bool:
                return worker._generation > generation and worker._stream is not None

            await until(reconnected)
            after = await ops.create_task("job", None)
            assert (await ops.wait_for_task(after.name, timeout=15)).state == (
                S.TASK_STATE_SUCCEEDED
            )
        finally:
            await worker.stop(2)
            await running

        # Nobody acknowledges: TIMED_OUT.
        ghost = await admin.commands.RestartWorker(
            command_pb2.RestartWorkerRequest(parent=P, worker="ghost", timeout=_timeout(1))
        )
        timed_out = await wait_status(admin, ghost.name, {S.COMMAND_STATUS_TIMED_OUT}, within=15)
        assert timed_out.error.message

        for bad in (0, 101, -101):
            with pytest.raises(ConveyorError) as invalid:
                await admin.commands.ResizePool(
                    command_pb2.ResizePoolRequest(parent=P, worker="ctl", delta=bad)
                )
            assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (await verify(admin)).ok


# Roles -----------------------------------------------------------------------------------


async def test_roles_of_every_verb(server: ConveyorServer, keys: dict[str, str]) -> None:
    t = "projects/alpha/tasks/00000000-0000-7000-8000-000000000000"
    calls: dict[str, tuple[str, Any]] = {
        "RetryTask": ("operator", command_pb2.RetryTaskRequest(parent=P, task=t)),
        "BatchRetryTasks": ("operator", command_pb2.BatchRetryTasksRequest(parent=P, max=1)),
        "PurgeQueue": ("admin", command_pb2.PurgeQueueRequest(parent=P, queue="q", force=True)),
        "RestartWorker": ("admin", command_pb2.RestartWorkerRequest(parent=P, worker="w")),
        "ResizePool": ("admin", command_pb2.ResizePoolRequest(parent=P, worker="w", delta=1)),
        "AddConsumer": ("admin", command_pb2.AddConsumerRequest(parent=P, worker="w", queue="q")),
        "CancelConsumer": (
            "admin",
            command_pb2.CancelConsumerRequest(parent=P, worker="w", queue="q"),
        ),
        "SetRateLimit": (
            "admin",
            command_pb2.SetRateLimitRequest(parent=P, kind="k", rate_limit="1/s"),
        ),
        "GetCommand": ("viewer", command_pb2.GetCommandRequest(name=f"{P}/commands/999")),
        "ListCommands": ("viewer", command_pb2.ListCommandsRequest(parent=P)),
        "VerifyAuditLog": ("viewer", command_pb2.VerifyAuditLogRequest(parent=P)),
    }
    ladder = ["viewer", "worker", "operator", "admin"]
    allowed = {
        "viewer": {"viewer", "worker", "operator", "admin"},
        "operator": {"operator", "admin"},
        "admin": {"admin"},
    }
    for role in ladder:
        async with client(server, keys[role]) as c:
            for method, (needed, request) in calls.items():
                try:
                    await getattr(c.commands, method)(request)
                except ConveyorError as error:
                    denied = error.code() == grpc.StatusCode.PERMISSION_DENIED
                else:
                    denied = False
                assert denied == (role not in allowed[needed]), (role, method)
    # Another project's log is not visible.
    async with client(server, keys["admin"]) as admin:
        with pytest.raises(ConveyorError) as other:
            await verify(admin, "projects/beta")
        assert other.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert queue_pb2  # imported for the queue messages' registration


async def test_cancel_and_queue_changes_are_audited(
    server: ConveyorServer, keys: dict[str, str]
) -> None:
    async with client(server, keys["operator"]) as ops, client(server, keys["admin"]) as admin:
        base = (await verify(ops)).verified_count
        task = await cancelled_task(ops)
        queue = "projects/alpha/queues/parked"
        await ops.queues.PauseQueue(queue_pb2.PauseQueueRequest(name=queue, reason="deploy"))
        await ops.queues.ResumeQueue(queue_pb2.ResumeQueueRequest(name=queue))
        await admin.queues.UpdateQueue(
            queue_pb2.UpdateQueueRequest(
                queue=queue_pb2.Queue(name=queue, max_concurrency=1),
                update_mask=field_mask_pb2.FieldMask(paths=["max_concurrency"]),
            )
        )
        listed = await ops.commands.ListCommands(
            command_pb2.ListCommandsRequest(parent=P, page_size=4)
        )
        got = [(c.verb, c.target) for c in reversed(listed.commands)]
        assert got == [
            (S.COMMAND_VERB_CANCEL_TASK, task.name),
            (S.COMMAND_VERB_PAUSE_QUEUE, queue),
            (S.COMMAND_VERB_RESUME_QUEUE, queue),
            (S.COMMAND_VERB_UPDATE_QUEUE, queue),
        ]
        assert from_value(listed.commands[-2].args.fields["reason"]) == "deploy"
        by_admin = await ops.commands.ListCommands(
            command_pb2.ListCommandsRequest(
                parent=P, filter=command_pb2.CommandFilter(issued_by=listed.commands[0].issued_by)
            )
        )
        assert [c.verb for c in by_admin.commands] == [S.COMMAND_VERB_UPDATE_QUEUE]
        assert (await verify(ops)).verified_count == base + 4
