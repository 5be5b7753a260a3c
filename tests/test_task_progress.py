"""Task.progress: what a running handler reports, on the task and as coalesced events."""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
from datetime import timedelta
from typing import Any

import httpx
from test_gateway import read_events  # type: ignore[import-not-found]
from test_worker_sdk import clients, running, wait_for  # type: ignore[import-not-found]

from conveyor.client import AsyncClient, TaskContext, Worker
from conveyor.server.app import ConveyorServer
from conveyor.v1 import enums_pb2, task_service_pb2

S = enums_pb2


async def test_sdk_progress_shows_on_the_task_list_and_events(
    server: ConveyorServer, keys: dict[str, str]
) -> None:
    go_on = threading.Event()
    async with clients(server, keys) as (ops, work):
        worker = Worker(work)

        @worker.task("render")
        def render(ctx: TaskContext) -> str:
            ctx.report_progress({"step": "rendering", "pct": 40})
            go_on.wait(30)
            return "done"

        async with running(worker):
            task = await ops.create_task("render", lease_duration=timedelta(seconds=1))
            deadline = time.monotonic() + 15
            while not (seen := await ops.get_task(task.name)).HasField("progress"):
                assert time.monotonic() < deadline, "no progress shown"
                await asyncio.sleep(0.02)
            assert dict(seen.progress) == {"step": "rendering", "pct": 40}
            assert seen.state == S.TASK_STATE_RUNNING and seen.progress_time.seconds > 0
            assert dict(seen.attempts[0].progress) == {"step": "rendering", "pct": 40}

            full, basic = [
                (
                    await ops.tasks.ListTasks(
                        task_service_pb2.ListTasksRequest(parent="projects/alpha", view=view)
                    )
                ).tasks[0]
                for view in (S.TASK_VIEW_FULL, S.TASK_VIEW_BASIC)
            ]
            assert dict(full.progress) == {"step": "rendering", "pct": 40}
            assert not basic.HasField("progress") and basic.progress_time.seconds > 0

            go_on.set()
            done = await wait_for(ops, task.name, [S.TASK_STATE_SUCCEEDED])
            assert dict(done.progress) == {"step": "rendering", "pct": 40}

        events = [e async for e in ops.list_events(tasks=[task.name])]
        progress = [e for e in events if e.type == "task.progress"]
        assert len(progress) == 1
        assert dict(progress[0].data["progress"]) == {"step": "rendering", "pct": 40}
        assert dict(progress[0].task.progress) == {"step": "rendering", "pct": 40}
        # The task's snapshot on its other events shows the progress too (the row now).
        succeeded = next(e for e in events if e.type == "task.succeeded")
        assert dict(succeeded.task.progress) == {"step": "rendering", "pct": 40}


async def test_a_chatty_handler_gets_at_most_one_event_per_second(
    server: ConveyorServer, keys: dict[str, str]
) -> None:
    async with (
        AsyncClient(server.grpc_target, api_key=keys["operator"], project="alpha") as ops,
        AsyncClient(server.grpc_target, api_key=keys["worker"], project="alpha") as w,
    ):
        task = await ops.create_task("chatty", queue="chat")
        (lease,) = await w.lease_tasks(["chat"], worker="w-1", wait_timeout=1)
        before = [e.id async for e in ops.list_events(tasks=[task.name])]
        watch = ops.watch_events(types=["task.progress"], tasks=[task.name], after=before[-1])
        first = asyncio.ensure_future(anext(watch))
        started = time.monotonic()
        for i in range(40):
            await w.extend_lease(task.name, lease.lease_id, progress={"i": i})
        elapsed = time.monotonic() - started
        # The first report is an event at once (the watcher sees it live).
        event = await asyncio.wait_for(first, 15)
        assert event.type == "task.progress" and dict(event.task.progress) == {"i": 0}
        await watch.aclose()
        # The task always holds the latest report; the log holds one per second at most.
        latest = await ops.get_task(task.name)
        assert dict(latest.progress) == {"i": 39}
        events = [e async for e in ops.list_events(types=["task.progress"], tasks=[task.name])]
        assert 1 <= len(events) <= math.ceil(elapsed) + 1 < 40


async def test_the_task_page_shows_the_progress(
    server: ConveyorServer, keys: dict[str, str], signed_in: Any
) -> None:
    async with (
        AsyncClient(server.grpc_target, api_key=keys["operator"], project="alpha") as ops,
        AsyncClient(server.grpc_target, api_key=keys["worker"], project="alpha") as w,
    ):
        task = await ops.create_task("render", queue="pages")
        (lease,) = await w.lease_tasks(["pages"], worker="w-1", wait_timeout=1)
        await w.extend_lease(task.name, lease.lease_id, progress={"frames": 120})
        page = await signed_in("viewer")
        await page.goto(f"{server.http_base_url}/ui/tasks/{task.name.rsplit('/', 1)[-1]}")
        progress = page.locator("dt", has_text="Progress").locator("xpath=following-sibling::dd[1]")
        assert "frames: 120" in await progress.inner_text()


async def test_progress_reaches_sse_watchers_over_rest(
    server: ConveyorServer, admin_key: str
) -> None:
    async with httpx.AsyncClient(
        base_url=server.http_base_url,
        headers={"Authorization": f"Bearer {admin_key}"},
        timeout=10,
    ) as http:
        created = await http.post("/v1/projects/default/tasks", json={"kind": "k", "queue": "sse"})
        name = created.json()["name"]
        leased = await http.post(
            "/v1/projects/default/tasks:lease",
            json={"worker": "w-rest", "queues": ["sse"], "max_tasks": 1, "wait_timeout": "1s"},
        )
        lease_id = leased.json()["leases"][0]["lease_id"]
        sse = {"Accept": "text/event-stream"}
        params = {"filter.types": "task.progress"}
        watch = "/v1/projects/default/events:watch"
        async with http.stream("GET", watch, params=params, headers=sse) as response:
            assert response.status_code == 200
            beat = await http.post(
                f"/v1/{name}:extendLease",
                json={"lease_id": lease_id, "progress": {"rows": 7}},
            )
            assert beat.status_code == 200, beat.text
            [event] = await read_events(response, 1)
        assert event["event"] == "task.progress"
        data = json.loads(event["data"])
        assert data["subject"] == name and data["task"]["progress"] == {"rows": 7}
        assert data["data"]["progress"] == {"rows": 7} and data["task"]["progress_time"]
