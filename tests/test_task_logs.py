"""Task logs (#19 point 2): AppendTaskLogs fenced by the lease, ListTaskLogs pages,
WatchTaskLogs tails an attempt, the per-attempt bound, auth, and deletion with the task."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import grpc
import httpx
import pytest
from google.protobuf import field_mask_pb2, struct_pb2
from test_workers_batches import Stream, complete, leases_of  # type: ignore[import-not-found]

from conveyor.client import AsyncClient
from conveyor.client.errors import ConveyorError as ClientError
from conveyor.server.app import ConveyorServer
from conveyor.server.loops.task_retention import TaskRetentionLoop
from conveyor.v1 import (
    command_pb2,
    enums_pb2,
    queue_pb2,
    task_pb2,
    task_service_pb2,
    worker_pb2,
    worker_pb2_grpc,
)

S = enums_pb2
Line = task_service_pb2.TaskLogLine


def _lines(*messages: str, **kwargs: object) -> list[task_service_pb2.TaskLogLine]:
    return [Line(message=m, **kwargs) for m in messages]  # type: ignore[arg-type]


async def _append(
    w: AsyncClient, lease: task_pb2.Lease, lines: list[task_service_pb2.TaskLogLine]
) -> task_service_pb2.AppendTaskLogsResponse:
    return await w.tasks.AppendTaskLogs(
        task_service_pb2.AppendTaskLogsRequest(
            name=lease.task.name, lease_id=lease.lease_id, lines=lines
        )
    )


async def _list(
    c: AsyncClient, name: str, attempt: int = 0, page_size: int = 0, order_by: str = ""
) -> list[task_service_pb2.TaskLogLine]:
    out: list[task_service_pb2.TaskLogLine] = []
    token = ""
    while True:
        page = await c.tasks.ListTaskLogs(
            task_service_pb2.ListTaskLogsRequest(
                name=name,
                attempt=attempt,
                page_size=page_size,
                page_token=token,
                order_by=order_by,
            )
        )
        out.extend(page.lines)
        token = page.next_page_token
        if not token:
            return out


async def _leased(ops: AsyncClient, w: AsyncClient, queue: str, **task: object) -> task_pb2.Lease:
    await ops.create_task("logged", queue=queue, **task)  # type: ignore[arg-type]
    (lease,) = await w.lease_tasks([queue], worker="w-1", wait_timeout=5)
    return lease


async def _log_rows(server: ConveyorServer, name: str) -> int:
    project, task_id = name.split("/")[1::2]
    async with server.context.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT count(*) FROM task_logs WHERE project = %s AND task_id = %s::uuid",
            (project, task_id),
        )
        row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def test_append_then_list_by_attempt_and_page(
    server: ConveyorServer, keys: dict[str, str]
) -> None:
    async with (
        AsyncClient(server.grpc_target, api_key=keys["operator"], project="alpha") as ops,
        AsyncClient(server.grpc_target, api_key=keys["worker"], project="alpha") as w,
    ):
        retry = {"max_attempts": 3, "initial_backoff": 0.1, "backoff": "fixed"}
        lease = await _leased(ops, w, "logs", retry_policy=retry)
        name = lease.task.name
        fields = struct_pb2.Struct()
        fields.update({"rows": 7, "table": "users"})
        when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
        first = Line(message="loading", fields=fields, level=S.TASK_LOG_LEVEL_WARNING)
        first.time.FromDatetime(when)
        answer = await _append(
            w, lease, [first, Line(message="out", stream=S.TASK_LOG_STREAM_STDOUT)]
        )
        assert answer.last_seq == 2 and answer.dropped_count == 0
        await _append(w, lease, _lines("a", "b", "c"))
        # The attempt fails and is retried: the second attempt's log starts at 1.
        await w.fail_task(name, lease.lease_id, message="boom", retryable=True)
        (second,) = await w.lease_tasks(["logs"], worker="w-1", wait_timeout=30)
        assert second.task.attempt == 2
        await _append(w, second, _lines("again"))

        everything = await _list(ops, name)
        assert [(x.attempt, x.seq, x.message) for x in everything] == [
            (1, 1, "loading"),
            (1, 2, "out"),
            (1, 3, "a"),
            (1, 4, "b"),
            (1, 5, "c"),
            (2, 1, "again"),
        ]
        top = everything[0]
        assert dict(top.fields) == {"rows": 7, "table": "users"}
        assert top.level == S.TASK_LOG_LEVEL_WARNING and top.stream == S.TASK_LOG_STREAM_LOG
        assert top.time.ToDatetime(tzinfo=UTC) == when
        assert everything[1].stream == S.TASK_LOG_STREAM_STDOUT
        assert everything[1].level == S.TASK_LOG_LEVEL_INFO and everything[1].time.seconds > 0
        assert all(x.dropped_count == 0 for x in everything)
        # Pages of 2 walk the same lines; one attempt alone.
        assert await _list(ops, name, page_size=2) == everything
        newest = await _list(ops, name, page_size=2, order_by="seq desc")
        assert newest == everything[::-1]
        with pytest.raises(ClientError) as order:
            await ops.tasks.ListTaskLogs(
                task_service_pb2.ListTaskLogsRequest(name=name, order_by="time")
            )
        assert order.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert [x.message for x in await _list(ops, name, attempt=2)] == ["again"]
        assert await _list(ops, name, attempt=3) == []

        with pytest.raises(ClientError) as bad:
            await ops.tasks.ListTaskLogs(
                task_service_pb2.ListTaskLogsRequest(name=name, page_size=-1)
            )
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        missing = name.rsplit("/", 1)[0] + "/0190b6a0-0000-7000-8000-000000000000"
        with pytest.raises(ClientError) as gone:
            await ops.tasks.ListTaskLogs(task_service_pb2.ListTaskLogsRequest(name=missing))
        assert gone.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_stale_lease_is_refused_and_changes_nothing(
    server: ConveyorServer, keys: dict[str, str]
) -> None:
    async with (
        AsyncClient(server.grpc_target, api_key=keys["operator"], project="alpha") as ops,
        AsyncClient(server.grpc_target, api_key=keys["worker"], project="alpha") as w,
    ):
        lease = await _leased(ops, w, "stale")
        await _append(w, lease, _lines("kept"))
        await w.complete_task(lease.task.name, lease.lease_id, "done")
        with pytest.raises(ClientError) as stale:
            await _append(w, lease, _lines("late"))
        assert stale.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert stale.value.reason == "LEASE_STALE"
        assert [x.message for x in await _list(ops, lease.task.name)] == ["kept"]

        other = await _leased(ops, w, "stale")
        for lines, code in (
            ([], grpc.StatusCode.INVALID_ARGUMENT),
            (_lines(*["x"] * 1001), grpc.StatusCode.INVALID_ARGUMENT),
            (_lines("x" * (64 * 1024 + 1)), grpc.StatusCode.INVALID_ARGUMENT),
            ([Line(message="x", level=99)], grpc.StatusCode.INVALID_ARGUMENT),  # type: ignore[arg-type]
        ):
            with pytest.raises(ClientError) as refused:
                await _append(w, other, lines)
            assert refused.value.code() == code
        assert await _list(ops, other.task.name) == []
        missing = lease.task.name.rsplit("/", 1)[0] + "/0190b6a0-0000-7000-8000-000000000000"
        with pytest.raises(ClientError) as gone:
            await w.tasks.AppendTaskLogs(
                task_service_pb2.AppendTaskLogsRequest(
                    name=missing, lease_id=other.lease_id, lines=_lines("x")
                )
            )
        assert gone.value.code() == grpc.StatusCode.NOT_FOUND


async def test_the_bound_drops_the_oldest_lines_and_says_how_many(
    server: ConveyorServer, keys: dict[str, str]
) -> None:
    async with (
        AsyncClient(server.grpc_target, api_key=keys["operator"], project="alpha") as ops,
        AsyncClient(server.grpc_target, api_key=keys["worker"], project="alpha") as w,
    ):
        queue = await ops.queues.UpdateQueue(
            queue_pb2.UpdateQueueRequest(
                queue=queue_pb2.Queue(name="projects/alpha/queues/short", max_log_lines=5),
                update_mask=field_mask_pb2.FieldMask(paths=["max_log_lines"]),
            )
        )
        assert queue.max_log_lines == 5 and queue.max_log_bytes == 0
        lease = await _leased(ops, w, "short")
        await _append(w, lease, _lines("1", "2", "3"))
        answer = await _append(w, lease, _lines("4", "5", "6", "7", "8"))
        assert answer.last_seq == 8 and answer.dropped_count == 3
        kept = await _list(ops, lease.task.name)
        assert [(x.seq, x.message, x.dropped_count) for x in kept] == [
            (4, "4", 3),
            (5, "5", 0),
            (6, "6", 0),
            (7, "7", 0),
            (8, "8", 0),
        ]

        # Bytes: 1 KiB keeps three lines of 300 bytes; the bound moves as lines come.
        await ops.queues.UpdateQueue(
            queue_pb2.UpdateQueueRequest(
                queue=queue_pb2.Queue(
                    name="projects/alpha/queues/short", max_log_bytes=1024, max_log_lines=0
                ),
                update_mask=field_mask_pb2.FieldMask(paths=["max_log_bytes", "max_log_lines"]),
            )
        )
        got = await ops.get_queue("short")
        assert (got.max_log_bytes, got.max_log_lines) == (1024, 0)
        big = await _leased(ops, w, "short")
        for i in range(5):
            await _append(w, big, _lines(str(i) * 300))
        kept = await _list(ops, big.task.name)
        assert [(x.seq, x.message[0], x.dropped_count) for x in kept] == [
            (3, "2", 2),
            (4, "3", 0),
            (5, "4", 0),
        ]

        for field, bad_queue in (
            ("max_log_lines", queue_pb2.Queue(max_log_lines=-1)),
            ("max_log_bytes", queue_pb2.Queue(max_log_bytes=10)),
        ):
            bad_queue.name = "projects/alpha/queues/short"
            with pytest.raises(ClientError) as bad:
                await ops.queues.UpdateQueue(
                    queue_pb2.UpdateQueueRequest(
                        queue=bad_queue, update_mask=field_mask_pb2.FieldMask(paths=[field])
                    )
                )
            assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (await ops.get_queue("short")).max_log_bytes == 1024


async def test_watch_tails_the_attempt_and_ends_with_it(
    server: ConveyorServer, keys: dict[str, str]
) -> None:
    async with (
        AsyncClient(server.grpc_target, api_key=keys["operator"], project="alpha") as ops,
        AsyncClient(server.grpc_target, api_key=keys["viewer"], project="alpha") as viewer,
        AsyncClient(server.grpc_target, api_key=keys["worker"], project="alpha") as w,
    ):
        lease = await _leased(ops, w, "tail")
        await _append(w, lease, _lines("before"))
        call = viewer.tasks.WatchTaskLogs(
            task_service_pb2.WatchTaskLogsRequest(name=lease.task.name)
        )
        first = await asyncio.wait_for(call.read(), 15)
        assert isinstance(first, Line)
        assert first.message == "before" and first.seq == 1
        await _append(w, lease, _lines("live-1", "live-2"))
        seen = [await asyncio.wait_for(call.read(), 15) for _ in range(2)]
        assert [x.message for x in seen if isinstance(x, Line)] == ["live-1", "live-2"]
        await w.complete_task(lease.task.name, lease.lease_id, "done")
        # The attempt ended: the stream ends (OK) with nothing more.
        assert await asyncio.wait_for(call.read(), 15) is grpc.aio.EOF
        assert await call.code() == grpc.StatusCode.OK

        # A finished attempt is replayed from after_seq and ends at once.
        replay = viewer.tasks.WatchTaskLogs(
            task_service_pb2.WatchTaskLogsRequest(name=lease.task.name, attempt=1, after_seq=1)
        )
        assert [x.message async for x in replay] == ["live-1", "live-2"]


async def test_viewers_read_other_projects_cannot(
    server: ConveyorServer, keys: dict[str, str], admin_key: str
) -> None:
    async with (
        AsyncClient(server.grpc_target, api_key=keys["operator"], project="alpha") as ops,
        AsyncClient(server.grpc_target, api_key=keys["viewer"], project="alpha") as viewer,
        AsyncClient(server.grpc_target, api_key=keys["worker"], project="alpha") as w,
        AsyncClient(server.grpc_target, api_key=admin_key, project="beta") as root,
    ):
        lease = await _leased(ops, w, "auth")
        await _append(w, lease, _lines("secret"))
        assert [x.message for x in await _list(viewer, lease.task.name)] == ["secret"]
        with pytest.raises(ClientError) as denied:
            await _append(viewer, lease, _lines("nope"))
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED

        beta_key = (await root.create_api_key("projects/beta", S.ROLE_ADMIN)).secret
        async with AsyncClient(server.grpc_target, api_key=beta_key, project="beta") as beta:
            for call in (
                lambda: _list(beta, lease.task.name),
                lambda: _append(beta, lease, _lines("x")),
            ):
                with pytest.raises(ClientError) as other:
                    await call()
                assert other.value.code() == grpc.StatusCode.PERMISSION_DENIED
            watch = beta.tasks.WatchTaskLogs(
                task_service_pb2.WatchTaskLogsRequest(name=lease.task.name)
            )
            with pytest.raises(grpc.RpcError) as watched:
                await watch.read()
            assert watched.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_logs_go_with_their_task(
    server: ConveyorServer, keys: dict[str, str], admin_key: str
) -> None:
    async with (
        AsyncClient(server.grpc_target, api_key=keys["admin"], project="alpha") as admin,
        AsyncClient(server.grpc_target, api_key=keys["worker"], project="alpha") as w,
    ):
        deleted = await _leased(admin, w, "gone")
        await _append(w, deleted, _lines("a", "b"))
        await w.complete_task(deleted.task.name, deleted.lease_id, "done")
        expired = await _leased(admin, w, "gone")
        await _append(w, expired, _lines("c"))
        await w.complete_task(expired.task.name, expired.lease_id, "done")
        assert await _log_rows(server, deleted.task.name) == 2

        answer = await admin.tasks.BatchDeleteTasks(
            task_service_pb2.BatchDeleteTasksRequest(
                parent="projects/alpha", names=[deleted.task.name]
            )
        )
        assert answer.deleted_count == 1
        assert await _log_rows(server, deleted.task.name) == 0

        assert await _log_rows(server, expired.task.name) == 1
        loop = TaskRetentionLoop(server.context.pool)
        await loop.run_once(datetime.now(UTC) + timedelta(days=31))
        assert await _log_rows(server, expired.task.name) == 0


async def _next_event(lines: AsyncIterator[str]) -> dict[str, str]:
    """The next SSE event (a block with data) of a stream's lines."""
    block: dict[str, str] = {}
    async for line in lines:
        if line == "":
            if "data" in block:
                return block
            block = {}
        elif not line.startswith(":"):
            key, _, value = line.partition(": ")
            block[key] = value
    raise AssertionError("the stream ended before another event")


async def test_logs_over_rest_and_sse(server: ConveyorServer, admin_key: str) -> None:
    async with httpx.AsyncClient(
        base_url=server.http_base_url,
        headers={"Authorization": f"Bearer {admin_key}"},
        timeout=15,
    ) as http:
        created = await http.post("/v1/projects/default/tasks", json={"kind": "k", "queue": "sse"})
        name = created.json()["name"]
        leased = await http.post(
            "/v1/projects/default/tasks:lease",
            json={"worker": "w-rest", "queues": ["sse"], "max_tasks": 1, "wait_timeout": "1s"},
        )
        lease_id = leased.json()["leases"][0]["lease_id"]
        appended = await http.post(
            f"/v1/{name}/logs:append",
            json={"lease_id": lease_id, "lines": [{"message": "one", "fields": {"n": 1}}]},
        )
        assert appended.status_code == 200, appended.text
        assert appended.json()["last_seq"] == "1"
        sse = {"Accept": "text/event-stream"}
        async with http.stream("GET", f"/v1/{name}/logs:watch", headers=sse) as response:
            assert response.status_code == 200
            lines = response.aiter_lines()
            event = await _next_event(lines)
            assert json.loads(event["data"])["message"] == "one"
            await http.post(
                f"/v1/{name}/logs:append",
                json={"lease_id": lease_id, "lines": [{"message": "two", "stream": "STDERR"}]},
            )
            data = json.loads((await _next_event(lines))["data"])
            assert data["message"] == "two" and data["stream"] == "TASK_LOG_STREAM_STDERR"
            done = await http.post(f"/v1/{name}:complete", json={"lease_id": lease_id})
            assert done.status_code == 200, done.text
            # The attempt ended: the event stream ends.
            assert [line async for line in lines if line.startswith("data")] == []
        listed = await http.get(f"/v1/{name}/logs", params={"page_size": 1})
        body = listed.json()
        assert [x["message"] for x in body["lines"]] == ["one"] and body["next_page_token"]
        stale = await http.post(
            f"/v1/{name}/logs:append", json={"lease_id": lease_id, "lines": [{"message": "x"}]}
        )
        assert stale.status_code == 412, stale.text
        assert stale.headers["content-type"].startswith("application/problem+json")


async def test_log_batches_on_the_stream_are_fenced_item_by_item(
    server: ConveyorServer, keys: dict[str, str]
) -> None:
    """A TaskLogBatch is stored before the reports after it, and each item is fenced on
    its own: a stale lease, another project's task or a bad item drops that item alone."""
    async with (
        grpc.aio.insecure_channel(server.grpc_target) as channel,
        AsyncClient(server.grpc_target, api_key=keys["operator"], project="alpha") as ops,
    ):
        done = await ops.create_task("logged", queue="q")
        live = await ops.create_task("logged", queue="q")
        stream = Stream(worker_pb2_grpc.WorkerServiceStub(channel), keys["worker"])
        await stream.hello(batches=True)
        await stream.send(credit=worker_pb2.Credit(tasks=2))
        leased = {x.task.name: x for x in await leases_of(stream, 2)}
        first, second = leased[done.name], leased[live.name]
        await stream.send(reports=worker_pb2.ReportBatch(completes=[complete(first)]))
        assert (await stream.recv()).report_acks.acks[0].status.code == 0

        def item(lease: task_pb2.Lease, *lines: str) -> task_service_pb2.AppendTaskLogsRequest:
            return task_service_pb2.AppendTaskLogsRequest(
                name=lease.task.name, lease_id=lease.lease_id, lines=_lines(*lines)
            )

        other = item(second, "elsewhere")
        other.name = "projects/beta/tasks/" + second.task.name.rsplit("/", 1)[-1]
        appends = [
            item(first, "too late"),  # its lease ended with the complete above
            item(second, "kept 1", "kept 2"),
            other,
            item(second),  # no lines: invalid
            item(second, "kept 3"),
        ]
        await stream.send(logs=worker_pb2.TaskLogBatch(appends=appends))
        # The complete right behind the lines: they were stored while the lease held.
        await stream.send(reports=worker_pb2.ReportBatch(completes=[complete(second)]))
        assert (await stream.recv()).report_acks.acks[0].status.code == 0
        await stream.close()
        assert stream.error is None
        assert await _list(ops, done.name) == []
        assert [x.message for x in await _list(ops, live.name)] == ["kept 1", "kept 2", "kept 3"]


async def test_a_purged_task_keeps_its_logs_until_it_is_deleted(
    server: ConveyorServer, keys: dict[str, str]
) -> None:
    """PurgeQueue ends queued tasks CANCELLED (their history stays), so the log of an
    earlier attempt stays with the task, and goes when the task is deleted."""
    async with (
        AsyncClient(server.grpc_target, api_key=keys["admin"], project="alpha") as admin,
        AsyncClient(server.grpc_target, api_key=keys["worker"], project="alpha") as w,
    ):
        retry = {"max_attempts": 3, "initial_backoff": 0.1, "backoff": "fixed"}
        lease = await _leased(admin, w, "purged", retry_policy=retry)
        name = lease.task.name
        await _append(w, lease, _lines("attempt one"))
        await admin.pause_queue("purged")
        await w.fail_task(name, lease.lease_id, message="again", retryable=True)
        deadline = asyncio.get_running_loop().time() + 30
        while (await admin.get_task(name)).state != S.TASK_STATE_QUEUED:
            assert asyncio.get_running_loop().time() < deadline, "the retry never came due"
            await asyncio.sleep(0.05)
        await admin.commands.PurgeQueue(
            command_pb2.PurgeQueueRequest(parent="projects/alpha", queue="purged", force=True)
        )
        assert (await admin.get_task(name)).state == S.TASK_STATE_CANCELLED
        assert [x.message for x in await _list(admin, name)] == ["attempt one"]
        answer = await admin.tasks.BatchDeleteTasks(
            task_service_pb2.BatchDeleteTasksRequest(parent="projects/alpha", names=[name])
        )
        assert answer.deleted_count == 1
        assert await _log_rows(server, name) == 0


async def test_a_watch_on_another_replica_sees_the_lines(
    server: ConveyorServer, replica: ConveyorServer, keys: dict[str, str]
) -> None:
    """Appends wake this replica's watchers at once; a watcher on another replica sees
    them by its poll, and sees the attempt end."""
    async with (
        AsyncClient(server.grpc_target, api_key=keys["operator"], project="alpha") as ops,
        AsyncClient(replica.grpc_target, api_key=keys["viewer"], project="alpha") as far,
        AsyncClient(server.grpc_target, api_key=keys["worker"], project="alpha") as w,
    ):
        lease = await _leased(ops, w, "replicas")
        watch = far.watch_task_logs(lease.task.name)
        first = asyncio.ensure_future(anext(watch))
        await _append(w, lease, _lines("from replica one"))
        assert (await asyncio.wait_for(first, 15)).message == "from replica one"
        await _append(w, lease, _lines("and more"))
        await w.complete_task(lease.task.name, lease.lease_id, "done")
        assert [x.message async for x in watch] == ["and more"]
