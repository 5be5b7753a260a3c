"""Task.execution_timeout: the server ends an attempt that runs too long, heartbeats or not."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from test_cli_nouns import _json as cli_json  # type: ignore[import-not-found]
from test_worker_sdk import (  # type: ignore[import-not-found]
    clients,
    running,
    wait_for,
    wait_until,
)

from conveyor.client import (
    AsyncClient,
    FailedPreconditionError,
    InvalidArgumentError,
    TaskContext,
    Worker,
)
from conveyor.server.app import ConveyorServer
from conveyor.v1 import enums_pb2

S = enums_pb2


async def test_a_heartbeating_handler_is_timed_out_cancelled_and_retried(
    server: ConveyorServer, keys: dict[str, str]
) -> None:
    cancelled: list[int] = []
    async with clients(server, keys) as (ops, work):
        worker = Worker(work)

        @worker.task("forever")
        async def forever(ctx: TaskContext) -> None:
            try:
                await asyncio.sleep(600)  # heartbeats keep its lease alive all along
            except asyncio.CancelledError:
                cancelled.append(ctx.attempt)
                raise

        async with running(worker):
            task = await ops.create_task(
                "forever",
                lease_duration=timedelta(seconds=1),
                execution_timeout=timedelta(seconds=1.5),
                retry_policy={"max_attempts": 2, "backoff": "fixed", "initial_backoff": 0.05},
            )
            assert task.execution_timeout.ToTimedelta() == timedelta(seconds=1.5)
            failed = await wait_for(ops, task.name, [S.TASK_STATE_FAILED], within=30)
            # The SDK was told (as for a cancel) and cancelled the handler, each attempt.
            await wait_until(lambda: cancelled == [1, 2])
        assert failed.error.type == "EXECUTION_TIMEOUT" and failed.error.retryable
        assert failed.error.details["reason"] == "EXECUTION_TIMEOUT"
        assert [a.outcome for a in failed.attempts] == [S.ATTEMPT_OUTCOME_FAILED] * 2
        assert all(a.error.type == "EXECUTION_TIMEOUT" for a in failed.attempts)
        assert failed.execution_timeout.ToTimedelta() == timedelta(seconds=1.5)


async def test_a_late_report_from_the_timed_out_lease_is_refused(
    server: ConveyorServer, keys: dict[str, str]
) -> None:
    async with (
        AsyncClient(server.grpc_target, api_key=keys["operator"], project="alpha") as ops,
        AsyncClient(server.grpc_target, api_key=keys["worker"], project="alpha") as w,
    ):
        task = await ops.create_task(
            "slow",
            queue="timed",
            execution_timeout=timedelta(milliseconds=300),
            retry_policy={"max_attempts": 1},
        )
        (lease,) = await w.lease_tasks(["timed"], worker="w-1", wait_timeout=1)
        ended = await wait_for(ops, task.name, [S.TASK_STATE_FAILED], within=30)
        assert ended.error.type == "EXECUTION_TIMEOUT" and ended.state_reason
        # A unary worker's heartbeat is told its lease is stale, as after any lost lease.
        with pytest.raises(FailedPreconditionError):
            await w.extend_lease(task.name, lease.lease_id)
        with pytest.raises(FailedPreconditionError):
            await w.complete_task(task.name, lease.lease_id, {"late": True})
        assert (await ops.get_task(task.name)).state == S.TASK_STATE_FAILED


async def test_bad_execution_timeouts_are_refused(
    server: ConveyorServer, keys: dict[str, str]
) -> None:
    async with AsyncClient(server.grpc_target, api_key=keys["operator"], project="alpha") as c:
        for bad in (timedelta(milliseconds=50), timedelta(days=31), timedelta(seconds=-1)):
            with pytest.raises(InvalidArgumentError) as caught:
                await c.create_task("k", execution_timeout=bad)
            assert "execution_timeout" in str(caught.value)
        plain = await c.create_task("k")
        assert not plain.HasField("execution_timeout")
        assert not (await c.get_task(plain.name)).HasField("execution_timeout")


async def test_the_queue_default_applies_to_tasks_created_without_one(
    server: ConveyorServer, keys: dict[str, str]
) -> None:
    async with AsyncClient(server.grpc_target, api_key=keys["admin"], project="alpha") as c:
        queue = await c.update_queue("capped", execution_timeout=timedelta(minutes=5))
        assert queue.execution_timeout.ToTimedelta() == timedelta(minutes=5)
        assert (await c.get_queue("capped")).execution_timeout.ToTimedelta() == timedelta(minutes=5)
        inherited = await c.create_task("k", queue="capped")
        own = await c.create_task("k", queue="capped", execution_timeout=timedelta(seconds=7))
        for task, expected in ((inherited, 300), (own, 7)):
            assert task.execution_timeout.ToTimedelta() == timedelta(seconds=expected)
            read = await c.get_task(task.name)
            assert read.execution_timeout.ToTimedelta() == timedelta(seconds=expected)
        with pytest.raises(InvalidArgumentError) as caught:
            await c.update_queue("capped", execution_timeout=timedelta(milliseconds=1))
        assert "queue.execution_timeout" in str(caught.value)
        # Zero clears the default; tasks created afterwards have no limit.
        cleared = await c.update_queue("capped", execution_timeout=0)
        assert not cleared.HasField("execution_timeout")
        later = await c.create_task("k", queue="capped")
        assert not later.HasField("execution_timeout")
        assert (await c.get_task(inherited.name)).execution_timeout.seconds == 300


async def test_the_cli_sets_execution_timeouts(
    server: ConveyorServer, keys: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    admin = keys["admin"]
    queue = await cli_json(
        capsys, server, admin, "queues", "update", "cli", "--execution-timeout", "15m"
    )
    assert queue["execution_timeout"] == "900s"
    inherited = await cli_json(capsys, server, admin, "tasks", "create", "job", "--queue", "cli")
    assert inherited["execution_timeout"] == "900s"
    own = await cli_json(
        capsys,
        server,
        admin,
        "tasks",
        "create",
        "job",
        "--queue",
        "cli",
        "--execution-timeout",
        "90s",
    )
    assert own["execution_timeout"] == "90s"
    cleared = await cli_json(
        capsys, server, admin, "queues", "update", "cli", "--execution-timeout", "0"
    )
    assert "execution_timeout" not in cleared
