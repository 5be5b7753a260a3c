"""The typed client methods against a real server: tasks, queues, leases, workers."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from conveyor.client import (
    AlreadyExistsError,
    AsyncClient,
    Client,
    FailedPreconditionError,
    NotFoundError,
    TaskSpec,
)
from conveyor.client._json import from_value
from conveyor.server.app import ConveyorServer
from conveyor.v1 import enums_pb2

S = enums_pb2


async def test_create_get_and_cancel_round_trip(server: ConveyorServer, keys: dict[str, str]):
    async with AsyncClient(server.grpc_target, api_key=keys["operator"], project="alpha") as c:
        later = datetime.now(UTC) + timedelta(hours=1)
        task = await c.create_task(
            "email.send",
            {"to": ["ada@example.com"], "n": 3},
            queue="emails",
            priority=2,
            labels={"team": "core"},
            schedule_time=later,
            lease_duration=timedelta(seconds=45),
            retry_policy={"max_attempts": 4, "backoff": "fixed", "initial_backoff": 2},
            correlation_id="corr-1",
            resume_token="start-here",
        )
        assert task.name.startswith("projects/alpha/tasks/")
        assert task.state == S.TASK_STATE_SCHEDULED
        got = await c.get_task(task.name.rsplit("/", 1)[1])  # a short id works too
        assert got.name == task.name
        assert from_value(got.input) == {"to": ["ada@example.com"], "n": 3}
        assert (got.queue, got.priority, got.correlation_id) == ("emails", 2, "corr-1")
        assert dict(got.labels) == {"team": "core"}
        assert got.lease_duration.seconds == 45
        assert got.retry_policy.max_attempts == 4
        assert got.retry_policy.backoff == enums_pb2.BACKOFF_FIXED
        assert got.resume_token == "start-here"
        assert got.schedule_time.seconds == int(later.timestamp())

        cancelled = await c.cancel_task(task.name, "not needed")
        assert cancelled.state == S.TASK_STATE_CANCELLED
        assert cancelled.state_reason == "not needed"
        with pytest.raises(FailedPreconditionError):
            await c.cancel_task(task.name)
        with pytest.raises(NotFoundError):
            await c.get_task("0190a0a0-0000-7000-8000-000000000000")


async def test_request_id_returns_the_first_result(server: ConveyorServer, keys: dict[str, str]):
    async with AsyncClient(server.grpc_target, api_key=keys["operator"], project="alpha") as c:
        first = await c.create_task("k", 1, request_id="order-42")
        again = await c.create_task("k", 1, request_id="order-42")
        assert again.name == first.name
        with pytest.raises(AlreadyExistsError):  # the same id with another input
            await c.create_task("k", 2, request_id="order-42")
        other = await c.create_task("k", 1)  # a fresh request_id each call
        assert other.name != first.name


async def test_batch_create_and_list_every_page(server: ConveyorServer, keys: dict[str, str]):
    async with AsyncClient(server.grpc_target, api_key=keys["operator"], project="alpha") as c:
        specs: list[TaskSpec] = [
            {"kind": "resize", "input": {"i": i}, "queue": "images"} for i in range(7)
        ]
        response = await c.batch_create_tasks([*specs, {"kind": "other", "queue": "misc"}])
        names = [r.task.name for r in response.results]
        assert len(names) == 8 and all(names)

        listed = [t.name async for t in c.list_tasks(page_size=3)]
        assert listed == names  # create_time order, across three pages
        images = [t async for t in c.list_tasks(queues=["images"], page_size=2)]
        assert [from_value(t.input)["i"] for t in images] == list(range(7))
        assert [t.kind async for t in c.list_tasks(kinds=["other"], states=["queued"])] == ["other"]
        assert [t async for t in c.list_tasks(states=["running"])] == []

        page = await c.list_tasks_page(page_size=5, order_by="create_time desc")
        assert [t.name for t in page.tasks] == names[::-1][:5] and page.next_page_token
        rest = await c.list_tasks_page(
            page_size=5, page_token=page.next_page_token, order_by="create_time desc"
        )
        assert len(rest.tasks) == 3 and not rest.next_page_token

        bad = await c.batch_create_tasks([{"kind": "ok"}, {"kind": "x" * 201}])
        assert bad.results[0].WhichOneof("result") == "task"
        assert bad.results[1].WhichOneof("result") == "status"


async def test_queue_methods(server: ConveyorServer, keys: dict[str, str]):
    async with AsyncClient(server.grpc_target, api_key=keys["operator"], project="alpha") as c:
        for queue_id in ("a", "b", "c"):
            await c.create_task("k", queue=queue_id)
        assert sorted([q.name async for q in c.list_queues(page_size=2)]) == [
            f"projects/alpha/queues/{q}" for q in ("a", "b", "c")
        ]
        queue = await c.get_queue("a")
        assert queue.stats.queued == 1 and not queue.paused
        paused = await c.pause_queue("a", "maintenance")
        assert paused.paused and paused.pause_reason == "maintenance"
        assert not (await c.resume_queue("projects/alpha/queues/a")).paused
        updated = await c.update_queue("a", max_concurrency=1, rate_limit="10/s")
        assert (updated.max_concurrency, updated.rate_limit) == (1, "10/s")
        updated = await c.update_queue("a", max_concurrency=0)
        assert (updated.max_concurrency, updated.rate_limit) == (0, "10/s")


async def test_custom_worker_leases_extends_and_reports(
    server: ConveyorServer, keys: dict[str, str]
):
    target = server.grpc_target
    async with (
        AsyncClient(target, api_key=keys["operator"], project="alpha") as ops,
        AsyncClient(target, api_key=keys["worker"], project="alpha") as w,
    ):
        done = await ops.create_task("k", {"x": 1}, queue="custom")
        failed = await ops.create_task("k", queue="custom", retry_policy={"max_attempts": 1})
        leases = await w.lease_tasks(["custom"], worker="w-1", max_tasks=5, wait_timeout=1)
        assert sorted(lease.task.name for lease in leases) == sorted([done.name, failed.name])
        by_name = {lease.task.name: lease for lease in leases}

        beat = await w.extend_lease(
            done.name, by_name[done.name].lease_id, lease_duration=60, progress={"pct": 50}
        )
        assert not beat.cancel_requested and beat.lease_expire_time.seconds > 0
        result = await w.complete_task(
            done.name, by_name[done.name].lease_id, {"ok": True}, summary="fine"
        )
        assert result.state == S.TASK_STATE_SUCCEEDED
        assert from_value(result.result) == {"ok": True} and result.summary == "fine"
        # Repeating the applied report (its answer was lost, say) returns the task; a
        # different outcome on that lease is refused.
        again = await w.complete_task(
            done.name, by_name[done.name].lease_id, {"ok": True}, summary="fine"
        )
        assert again.state == S.TASK_STATE_SUCCEEDED
        with pytest.raises(FailedPreconditionError):
            await w.fail_task(done.name, by_name[done.name].lease_id, message="late")

        failed_now = await w.fail_task(
            failed.name,
            by_name[failed.name].lease_id,
            error_type="Boom",
            message="it broke",
            details={"code": 7},
            retryable=True,
        )
        assert failed_now.state == S.TASK_STATE_FAILED  # no attempts left
        assert (failed_now.error.type, failed_now.error.message) == ("Boom", "it broke")

        assert await w.lease_tasks(["custom"], worker="w-1", wait_timeout=0) == []


async def test_the_sync_client_does_the_same(server: ConveyorServer, keys: dict[str, str]):
    def work() -> list[str]:
        with Client(server.grpc_target, api_key=keys["operator"], project="alpha") as c:
            created = c.create_task("sync.k", {"a": 1}, queue="s")
            c.batch_create_tasks([{"kind": "sync.k", "queue": "s"}], atomic=True)
            assert c.get_task(created.name).kind == "sync.k"
            names = [t.name for t in c.list_tasks(queues=["s"], page_size=1)]
            assert c.get_queue("s").stats.queued == 2
            assert [q.name for q in c.list_queues()] == ["projects/alpha/queues/s"]
            c.pause_queue("s")
            c.resume_queue("s")
            assert c.cancel_task(created.name).state == S.TASK_STATE_CANCELLED
            assert list(c.list_workers()) == []
            return names

    # The server shares this event loop: the blocking client runs in a thread.
    names = await asyncio.to_thread(work)
    assert len(names) == 2
