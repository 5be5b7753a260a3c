"""The worker SDK end to end: a real server, real Connect streams, real handlers."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import threading
import time
import weakref
from collections.abc import AsyncIterator, Collection
from datetime import timedelta
from typing import Any

from conveyor.client import AsyncClient, Client, PermanentError, TaskContext, Worker
from conveyor.client._json import from_value
from conveyor.server.app import ConveyorServer, ServerHooks
from conveyor.server.settings import Settings
from conveyor.v1 import enums_pb2, task_pb2

S = enums_pb2
TERMINAL = {
    S.TASK_STATE_SUCCEEDED,
    S.TASK_STATE_FAILED,
    S.TASK_STATE_CANCELLED,
    S.TASK_STATE_INTERRUPTED,
}
FAST_RETRY = {"max_attempts": 3, "backoff": "fixed", "initial_backoff": 0.05}


@contextlib.asynccontextmanager
async def running(worker: Worker, grace: float = 5.0) -> AsyncIterator[asyncio.Task[None]]:
    """Runs the worker for the block, then stops it and re-raises what ended it."""
    task = asyncio.create_task(worker.arun())
    try:
        yield task
    finally:
        await asyncio.wait_for(worker.stop(grace), grace + 15)
        await task


async def wait_for(
    client: AsyncClient,
    name: str,
    states: Collection[int],
    within: float = 15.0,
) -> task_pb2.Task:
    deadline = time.monotonic() + within
    while True:
        task = await client.get_task(name)
        if task.state in states:
            return task
        if task.state in TERMINAL or time.monotonic() > deadline:
            state = S.TaskState.Name(task.state)
            raise AssertionError(f"{name} is {state}: {task.error}; attempts {task.attempts}")
        await asyncio.sleep(0.02)


async def wait_until(predicate: Any, within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def clients(server: ConveyorServer, keys: dict[str, str]) -> AsyncIterator[Any]:
    target = server.grpc_target
    async with (
        AsyncClient(target, api_key=keys["operator"], project="alpha") as ops,
        AsyncClient(target, api_key=keys["worker"], project="alpha") as work,
    ):
        yield ops, work


async def test_sync_and_async_handlers_run_and_report(
    server: ConveyorServer, keys: dict[str, str]
) -> None:
    async with clients(server, keys) as (ops, work):
        worker = Worker(work, queues=["default", "other"], concurrency=2, worker_id="w-1")

        @worker.task("add")
        def add(ctx: TaskContext) -> dict[str, Any]:
            ctx.set_summary(f"added {len(ctx.input)}")
            ctx.set_resume_token("after-add")
            thread = threading.current_thread().name
            return {"sum": sum(ctx.input), "thread": thread, "attempt": ctx.attempt}

        @worker.task("echo")
        async def echo(ctx: TaskContext) -> Any:
            await asyncio.sleep(0)
            return {"input": ctx.input, "token": ctx.resume_token}

        async with running(worker):
            summed = await ops.create_task("add", [1, 2, 3])
            echoed = await ops.create_task("echo", "hi", queue="other", resume_token="t0")
            unknown = await ops.create_task("nobody.handles.this")
            done = await ops.wait_for_task(summed.name, timeout=15)
            assert done.state == S.TASK_STATE_SUCCEEDED, done.error
            result = from_value(done.result)
            assert result["sum"] == 6 and result["attempt"] == 1
            assert result["thread"].startswith("conveyor-w-1")  # the handler pool
            assert (done.summary, done.resume_token) == ("added 3", "after-add")
            assert done.worker == "projects/alpha/workers/w-1"
            echo_done = await wait_for(ops, echoed.name, [S.TASK_STATE_SUCCEEDED])
            assert from_value(echo_done.result) == {"input": "hi", "token": "t0"}
            failed = await wait_for(ops, unknown.name, [S.TASK_STATE_FAILED])
            assert (failed.error.type, failed.error.retryable) == ("UnknownKind", False)
            assert failed.attempt == 1

            listed = [w async for w in ops.list_workers()]
            assert [w.name for w in listed] == [worker.name]
            shown = await ops.get_worker("w-1")
            assert shown.state == S.WORKER_STATE_CONNECTED
            assert (list(shown.queues), shown.capacity) == (["default", "other"], 2)
            assert shown.sdk_version.startswith("conveyor-python/")


async def test_exceptions_fail_or_retry_with_the_error_recorded(
    server: ConveyorServer, keys: dict[str, str]
) -> None:
    class BadInput(PermanentError):
        pass

    async with clients(server, keys) as (ops, work):
        worker = Worker(work, concurrency=3)

        @worker.task("flaky")
        def flaky(ctx: TaskContext) -> str:
            if ctx.attempt == 1:
                raise RuntimeError("try again")
            return "second time lucky"

        @worker.task("bad")
        async def bad(ctx: TaskContext) -> None:
            raise BadInput(f"cannot use {ctx.input!r}")

        @worker.task("broken")
        def broken(ctx: TaskContext) -> None:
            raise ValueError("always")

        @worker.task("opaque")
        def opaque(ctx: TaskContext) -> object:
            return object()  # not JSON

        async with running(worker):
            flaky_task = await ops.create_task("flaky", retry_policy=FAST_RETRY)
            bad_task = await ops.create_task("bad", 7, retry_policy=FAST_RETRY)
            broken_task = await ops.create_task(
                "broken", retry_policy={**FAST_RETRY, "max_attempts": 2}
            )
            opaque_task = await ops.create_task("opaque", retry_policy=FAST_RETRY)

            done = await wait_for(ops, flaky_task.name, [S.TASK_STATE_SUCCEEDED])
            assert from_value(done.result) == "second time lucky"
            assert done.attempt == 2
            first = done.attempts[0]
            assert first.outcome == S.ATTEMPT_OUTCOME_FAILED
            assert (first.error.type, first.error.message) == ("RuntimeError", "try again")
            assert "RuntimeError" in first.error.details.fields["traceback"].string_value

            failed = await wait_for(ops, bad_task.name, [S.TASK_STATE_FAILED])
            assert failed.attempt == 1
            assert (failed.error.type, failed.error.retryable) == ("BadInput", False)
            assert failed.error.message == "cannot use 7"

            exhausted = await wait_for(ops, broken_task.name, [S.TASK_STATE_FAILED])
            assert exhausted.attempt == 2 and exhausted.error.type == "ValueError"

            opaque_failed = await wait_for(ops, opaque_task.name, [S.TASK_STATE_FAILED])
            assert opaque_failed.error.type == "TypeError"
            assert opaque_failed.attempt == 1


async def test_cancel_reaches_async_and_sync_handlers(
    server: ConveyorServer, keys: dict[str, str]
) -> None:
    seen: dict[str, str] = {}
    started = {"async": threading.Event(), "sync": threading.Event()}
    async with clients(server, keys) as (ops, work):
        worker = Worker(work, concurrency=2)

        @worker.task("async.long")
        async def long_async(ctx: TaskContext) -> None:
            started["async"].set()
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                seen["async"] = "cancelled"
                raise

        @worker.task("sync.long")
        def long_sync(ctx: TaskContext) -> None:
            started["sync"].set()
            ctx.report_progress({"waiting": True})  # rides on the next heartbeat
            if ctx.cancelled.wait(30):
                seen["sync"] = "cancelled"
            ctx.raise_if_cancelled()

        async with running(worker):
            # A short lease makes the heartbeats, which carry the cancel, frequent.
            lease = timedelta(seconds=1.5)
            a = await ops.create_task("async.long", lease_duration=lease)
            s = await ops.create_task("sync.long", lease_duration=lease)
            await wait_until(lambda: started["async"].is_set() and started["sync"].is_set())
            running_a = await ops.cancel_task(a.name, "changed my mind")
            assert running_a.state == S.TASK_STATE_RUNNING and running_a.cancel_requested
            await ops.cancel_task(s.name)
            ended_a = await wait_for(ops, a.name, [S.TASK_STATE_INTERRUPTED], within=10)
            ended_s = await wait_for(ops, s.name, [S.TASK_STATE_INTERRUPTED], within=10)
            assert seen == {"async": "cancelled", "sync": "cancelled"}
            for ended in (ended_a, ended_s):
                assert (ended.error.type, ended.error.retryable) == ("Cancelled", False)


async def test_heartbeats_keep_leases_of_different_lengths_alive(
    server: ConveyorServer, keys: dict[str, str]
) -> None:
    """One timer beats for every running task (_heartbeats.py): a task with a short lease
    that starts while one with a long lease runs gets its first beat a third of its own
    lease later, not at the long one's; both outlive their leases in one attempt."""
    started = {"long": asyncio.Event(), "short": asyncio.Event()}
    async with clients(server, keys) as (ops, work):
        worker = Worker(work, concurrency=2)

        @worker.task("outlive")
        async def outlive(ctx: TaskContext) -> str:
            started[ctx.input["name"]].set()
            await asyncio.sleep(ctx.input["seconds"])
            return "outlived"

        async with running(worker):
            # Beats every 4 s for the long one, every 0.67 s for the short one (whose
            # lease would end at 2 s, and the reaper end its attempt, with a beat at 4 s).
            long = await ops.create_task(
                "outlive", {"name": "long", "seconds": 5}, lease_duration=timedelta(seconds=12)
            )
            await asyncio.wait_for(started["long"].wait(), 15)
            short = await ops.create_task(
                "outlive", {"name": "short", "seconds": 4}, lease_duration=timedelta(seconds=2)
            )
            for task in (short, long):
                done = await wait_for(ops, task.name, [S.TASK_STATE_SUCCEEDED], within=20)
                assert from_value(done.result) == "outlived"
                assert [a.attempt for a in done.attempts] == [1]


async def test_a_reported_task_leaves_nothing_for_the_garbage_collector(
    server: ConveyorServer, keys: dict[str, str]
) -> None:
    """A finished run holds no reference cycle: it is freed with its last reference, not
    by a collector pass (a full one scans every object of the process; a worker running
    thousands of tasks a second would pay for one every few seconds)."""
    contexts: list[weakref.ref[TaskContext]] = []
    async with clients(server, keys) as (ops, work):
        worker = Worker(work, concurrency=2)

        @worker.task("quick")
        async def quick(ctx: TaskContext) -> str:
            contexts.append(weakref.ref(ctx))
            ctx.log("a line")  # the log buffer's wake-up is the run's, not a cycle's
            return "ok"

        gc.collect()
        gc.disable()
        try:
            async with running(worker):
                task = await ops.create_task("quick")
                await wait_for(ops, task.name, [S.TASK_STATE_SUCCEEDED])
                await wait_until(lambda: contexts and contexts[0]() is None)
        finally:
            gc.enable()


async def test_graceful_stop_waits_for_running_handlers(
    server: ConveyorServer, keys: dict[str, str]
) -> None:
    started = threading.Event()
    async with clients(server, keys) as (ops, work):
        worker = Worker(work, concurrency=2)

        @worker.task("slow")
        def slow(ctx: TaskContext) -> str:
            started.set()
            time.sleep(0.5)
            return "finished"

        async with running(worker) as run:
            task = await ops.create_task("slow")
            await wait_until(started.is_set)
            await asyncio.wait_for(worker.stop(grace=10), 15)
            assert run.done()
        # The report went out before stop() returned.
        done = await ops.get_task(task.name)
        assert done.state == S.TASK_STATE_SUCCEEDED
        assert from_value(done.result) == "finished"
        # A stopped worker takes nothing more: a task created now waits for the next
        # worker, which runs it.
        later = await ops.create_task("slow")
        successor = Worker(work, worker_id="w-successor")

        @successor.task("slow")
        def quick(ctx: TaskContext) -> str:
            return "successor"

        async with running(successor):
            taken = await ops.wait_for_task(later.name, timeout=15)
        assert taken.worker == successor.name
        assert from_value(taken.result) == "successor"


async def test_handlers_past_the_grace_period_are_retried(
    server: ConveyorServer, keys: dict[str, str]
) -> None:
    started = asyncio.Event()
    async with clients(server, keys) as (ops, work):
        worker = Worker(work)

        @worker.task("stuck")
        async def stuck(ctx: TaskContext) -> None:
            started.set()
            await asyncio.sleep(60)

        async with running(worker):
            task = await ops.create_task(
                "stuck", retry_policy={**FAST_RETRY, "initial_backoff": 60}
            )
            await asyncio.wait_for(started.wait(), 15)
            began = time.monotonic()
            await asyncio.wait_for(worker.stop(grace=0.2), 15)
            assert time.monotonic() - began < 5
        retrying = await ops.get_task(task.name)
        assert retrying.state == S.TASK_STATE_SCHEDULED
        assert retrying.attempts[0].error.type == "WorkerStopped"
        assert retrying.attempts[0].error.retryable


async def test_a_sync_handler_past_the_grace_period_is_retried(
    server: ConveyorServer, keys: dict[str, str]
) -> None:
    """Its thread cannot be stopped: the worker stops waiting for it (_thread_results.py)
    and reports the attempt as WorkerStopped; what the thread returns later is dropped."""
    started, release = threading.Event(), threading.Event()
    async with clients(server, keys) as (ops, work):
        worker = Worker(work)

        @worker.task("stuck.sync")
        def stuck(ctx: TaskContext) -> str:
            started.set()
            release.wait(30)
            return "too late"

        try:
            async with running(worker):
                task = await ops.create_task(
                    "stuck.sync", retry_policy={**FAST_RETRY, "initial_backoff": 60}
                )
                await wait_until(started.is_set)
                await asyncio.wait_for(worker.stop(grace=0.2), 15)
        finally:
            release.set()
        retrying = await ops.get_task(task.name)
        assert retrying.state == S.TASK_STATE_SCHEDULED
        assert retrying.attempts[0].error.type == "WorkerStopped"


async def test_the_sync_client_runs_a_worker_in_its_own_thread(
    server: ConveyorServer, keys: dict[str, str]
) -> None:
    client = Client(server.grpc_target, api_key=keys["worker"], project="alpha")
    worker = Worker(client, concurrency=1)

    @worker.task("double")
    def double(ctx: TaskContext) -> int:
        return int(ctx.input) * 2

    # run() blocks, so it gets a thread; the server shares the test's loop.
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        async with clients(server, keys) as (ops, _work):
            task = await ops.create_task("double", 21)
            done = await wait_for(ops, task.name, [S.TASK_STATE_SUCCEEDED])
            assert from_value(done.result) == 42
    finally:
        worker.request_stop(grace=5)
        await asyncio.to_thread(thread.join, 20)
        client.close()
    assert not thread.is_alive()


async def test_the_worker_reconnects_after_a_server_restart(
    server_settings: Settings, server_hooks: ServerHooks
) -> None:
    first = ConveyorServer(server_settings, server_hooks)
    await first.start()
    port = first.grpc_port
    key = (first.data_dir / "admin.key").read_text().strip()
    release = threading.Event()
    held = threading.Event()
    servers = [first]
    async with (
        AsyncClient(first.grpc_target, api_key=key) as ops,
        AsyncClient(first.grpc_target, api_key=key) as work,
    ):
        worker = Worker(work, concurrency=2)

        @worker.task("quick")
        def quick(ctx: TaskContext) -> str:
            return "ok"

        @worker.task("hold")
        def hold(ctx: TaskContext) -> str:
            held.set()
            release.wait(30)
            return "held across the restart"

        run = asyncio.create_task(worker.arun())
        try:
            before = await ops.create_task("quick")
            await wait_for(ops, before.name, [S.TASK_STATE_SUCCEEDED])
            across = await ops.create_task("hold")
            await wait_until(held.is_set)

            await servers.pop().stop(grace=0.5)
            release.set()  # finishes while the server is away: reported once it is back
            await asyncio.sleep(0.3)
            second = ConveyorServer(
                server_settings.replace(grpc_address=f"127.0.0.1:{port}"), server_hooks
            )
            await second.start()
            servers.append(second)

            done = await wait_for(ops, across.name, [S.TASK_STATE_SUCCEEDED], within=20)
            assert from_value(done.result) == "held across the restart"
            after = await ops.create_task("quick")
            await wait_for(ops, after.name, [S.TASK_STATE_SUCCEEDED], within=20)
        finally:
            release.set()
            await asyncio.wait_for(worker.stop(grace=2), 20)
            await run
            for server in servers:
                await server.stop(grace=0)
