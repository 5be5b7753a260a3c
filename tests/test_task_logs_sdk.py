"""Task logs from the Worker SDK (ctx.log, captured stdout/stderr), read back with the
clients and `conveyor tasks logs` (#19 point 2)."""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from typing import Any

import pytest
from test_worker_sdk import clients, running, wait_for  # type: ignore[import-not-found]

from conveyor.client import AsyncClient, TaskContext, Worker
from conveyor.client.cli import main
from conveyor.server.app import ConveyorServer
from conveyor.v1 import enums_pb2, task_service_pb2

S = enums_pb2


async def _lines(c: AsyncClient, name: str, attempt: int = 0) -> list[task_service_pb2.TaskLogLine]:
    return [line async for line in c.list_task_logs(name, attempt=attempt)]


async def test_ctx_log_lines_arrive_in_order_before_the_report(
    server: ConveyorServer, keys: dict[str, str]
) -> None:
    async with clients(server, keys) as (ops, work):
        worker = Worker(work, concurrency=2)

        @worker.task("sync.logs")
        def sync_logs(ctx: TaskContext) -> str:
            ctx.log("starting", rows=3, table="users")
            for i in range(2500):
                ctx.log(f"line {i}")
            ctx.log("careful", level="warning")
            return "done"

        @worker.task("async.logs")
        async def async_logs(ctx: TaskContext) -> str:
            ctx.log("from a coroutine", level="debug")
            await asyncio.sleep(0)
            ctx.log("finished", level="error", ok=False)
            return "done"

        async with running(worker):
            one = await ops.create_task("sync.logs")
            two = await ops.create_task("async.logs")
            await wait_for(ops, one.name, [S.TASK_STATE_SUCCEEDED])
            await wait_for(ops, two.name, [S.TASK_STATE_SUCCEEDED])

        # Every line was stored before the report that ended the attempt.
        lines = await _lines(ops, one.name)
        assert [x.seq for x in lines] == list(range(1, 2503))
        assert lines[0].message == "starting" and dict(lines[0].fields) == {
            "rows": 3,
            "table": "users",
        }
        assert [x.message for x in lines[1:-1]] == [f"line {i}" for i in range(2500)]
        assert lines[-1].level == S.TASK_LOG_LEVEL_WARNING
        assert all(x.stream == S.TASK_LOG_STREAM_LOG and x.attempt == 1 for x in lines)
        other = await _lines(ops, two.name)
        assert [(x.message, x.level) for x in other] == [
            ("from a coroutine", S.TASK_LOG_LEVEL_DEBUG),
            ("finished", S.TASK_LOG_LEVEL_ERROR),
        ]
        assert dict(other[1].fields) == {"ok": False}


async def test_captured_output_of_concurrent_handlers_stays_apart(
    server: ConveyorServer, keys: dict[str, str]
) -> None:
    both_running = threading.Barrier(2, timeout=30)
    async with clients(server, keys) as (ops, work):
        worker = Worker(work, queues=["out"], concurrency=3, capture_output=True)

        @worker.task("printer")
        def printer(ctx: TaskContext) -> None:
            me = ctx.input["me"]
            both_running.wait()  # the two handlers print at the same time
            for i in range(50):
                print(f"{me} {i}")
            print(f"{me} complains", file=sys.stderr)
            sys.stdout.write(f"{me} without a newline")

        @worker.task("async.printer")
        async def async_printer(ctx: TaskContext) -> None:
            print("from the loop")
            await asyncio.sleep(0.01)
            print("still mine", file=sys.stderr)

        async with running(worker):
            tasks = [await ops.create_task("printer", {"me": me}, queue="out") for me in "ab"]
            third = await ops.create_task("async.printer", queue="out")
            print("the test's own output")
            for task in [*tasks, third]:
                await wait_for(ops, task.name, [S.TASK_STATE_SUCCEEDED])

        for me, task in zip("ab", tasks, strict=True):
            lines = await _lines(ops, task.name)
            out = [x.message for x in lines if x.stream == S.TASK_LOG_STREAM_STDOUT]
            err = [x.message for x in lines if x.stream == S.TASK_LOG_STREAM_STDERR]
            assert out == [*(f"{me} {i}" for i in range(50)), f"{me} without a newline"]
            assert err == [f"{me} complains"]
        third_lines = await _lines(ops, third.name)
        assert [(x.stream, x.message) for x in third_lines] == [
            (S.TASK_LOG_STREAM_STDOUT, "from the loop"),
            (S.TASK_LOG_STREAM_STDERR, "still mine"),
        ]


async def test_without_capture_output_prints_stay_local(
    server: ConveyorServer, keys: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    async with clients(server, keys) as (ops, work):
        worker = Worker(work, queues=["plain"])

        @worker.task("printer")
        def printer(ctx: TaskContext) -> None:
            print("to the console")
            ctx.log("to the log")

        async with running(worker):
            task = await ops.create_task("printer", queue="plain")
            await wait_for(ops, task.name, [S.TASK_STATE_SUCCEEDED])
        assert [x.message for x in await _lines(ops, task.name)] == ["to the log"]
        assert "to the console" in capsys.readouterr().out


async def test_clients_watch_and_set_bounds(server: ConveyorServer, keys: dict[str, str]) -> None:
    async with clients(server, keys) as (ops, work):
        queue = await ops.update_queue("bounded", max_log_lines=3, max_log_bytes=4096)
        assert (queue.max_log_lines, queue.max_log_bytes) == (3, 4096)
        task = await ops.create_task("manual", queue="bounded")
        (lease,) = await work.lease_tasks(["bounded"], worker="w-1", wait_timeout=5)
        watch = ops.watch_task_logs(task.name)
        first = asyncio.ensure_future(anext(watch))
        answer = await work.append_task_logs(task.name, lease.lease_id, ["a", "b", "c", "d"])
        assert answer.last_seq == 4 and answer.dropped_count == 1
        seen = [await asyncio.wait_for(first, 15)]
        await work.complete_task(task.name, lease.lease_id, None)
        seen += [line async for line in watch]
        assert [(x.seq, x.message, x.dropped_count) for x in seen] == [
            (2, "b", 1),
            (3, "c", 0),
            (4, "d", 0),
        ]
        queue = await ops.update_queue("bounded", max_log_lines=0)
        assert (queue.max_log_lines, queue.max_log_bytes) == (0, 4096)


async def _cli(
    capsys: pytest.CaptureFixture[str], server: ConveyorServer, key: str, *argv: str
) -> tuple[int, str, str]:
    base = ["--target", server.grpc_target, "--key", key, "--project", "alpha"]
    code = await asyncio.to_thread(main, [*base, *argv])
    out, err = capsys.readouterr()
    return code, out, err


async def test_cli_prints_and_follows_the_logs(
    server: ConveyorServer, keys: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    async with clients(server, keys) as (ops, work):
        code, out, err = await _cli(
            capsys, server, keys["operator"], "queues", "update", "cli", "--max-log-lines", "2"
        )
        assert code == 0, err
        assert json.loads(out)["max_log_lines"] == 2
        task = await ops.create_task("manual", queue="cli")
        short = task.name.rsplit("/", 1)[-1]
        (lease,) = await work.lease_tasks(["cli"], worker="w-1", wait_timeout=5)
        await work.append_task_logs(task.name, lease.lease_id, ["one", "two", "three"])

        code, out, err = await _cli(capsys, server, keys["viewer"], "tasks", "logs", short)
        assert code == 0, err
        printed: list[dict[str, Any]] = [json.loads(line) for line in out.splitlines()]
        assert [(x["seq"], x["message"]) for x in printed] == [("2", "two"), ("3", "three")]
        assert "1 earlier lines of attempt 1 were dropped" in err
        code, out, _ = await _cli(
            capsys, server, keys["viewer"], "tasks", "logs", short, "--attempt", "2"
        )
        assert code == 0 and out == ""

        follow = asyncio.ensure_future(
            _cli(capsys, server, keys["viewer"], "tasks", "logs", short, "--follow")
        )
        await work.append_task_logs(task.name, lease.lease_id, ["four"])
        await work.complete_task(task.name, lease.lease_id, None)
        # The attempt ended: --follow returns by itself.
        code, out, _ = await asyncio.wait_for(follow, 30)
        assert code == 0
        assert [json.loads(line)["message"] for line in out.splitlines()][-1] == "four"
