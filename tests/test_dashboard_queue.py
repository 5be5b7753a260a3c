"""The dashboard's queue page in a real browser: live updates without a reload, cancel,
approve and purge from the page."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from conveyor.client import AsyncClient, TaskContext, Worker
from conveyor.server.app import ConveyorServer
from conveyor.v1 import enums_pb2

S = enums_pb2


def short(name: str) -> str:
    return name.rsplit("/", 1)[-1]


@contextlib.asynccontextmanager
async def clients(server: ConveyorServer, keys: dict[str, str]) -> AsyncIterator[Any]:
    target = server.grpc_target
    async with (
        AsyncClient(target, api_key=keys["operator"], project="alpha") as ops,
        AsyncClient(target, api_key=keys["worker"], project="alpha") as work,
    ):
        yield ops, work


async def open_queue(page: Any, server: ConveyorServer, queue: str) -> None:
    """Opens a queue page and waits until its event stream is subscribed."""
    await page.goto(f"{server.http_base_url}/ui/queues/{queue}")
    await page.locator("#live[data-connected='1']").wait_for(state="attached")


async def test_a_task_appears_starts_and_finishes_on_the_open_page(
    server: ConveyorServer, keys: dict[str, str], signed_in: Any
) -> None:
    gates: dict[int, asyncio.Event] = {1: asyncio.Event(), 2: asyncio.Event()}
    async with clients(server, keys) as (ops, work):
        first = await ops.create_task("report.build", {"n": 1}, queue="live")
        page = await signed_in("operator")
        await open_queue(page, server, "live")
        await page.evaluate("window.notReloaded = true")

        second = await ops.create_task("report.build", {"n": 2}, queue="live")
        queued = page.locator(f"[data-pane=queue] tr[data-task='{short(second.name)}']")
        await queued.wait_for()
        assert "QUEUED" in await queued.inner_text()

        # A short lease: heartbeats (which carry the progress) every half second.
        worker = Worker(
            work, queues=["live"], concurrency=2, worker_id="w-live", lease_duration=1.5
        )

        @worker.task("report.build")
        async def build(ctx: TaskContext) -> dict[str, Any]:
            ctx.report_progress({"step": "rendering", "n": ctx.input["n"]})
            await gates[ctx.input["n"]].wait()
            ctx.set_summary(f"built report {ctx.input['n']}")
            ctx.set_resume_token(f"rollout-{ctx.input['n']}")
            return {"pages": 3}

        run = asyncio.create_task(worker.arun())
        try:
            for task in (first, second):
                running = page.locator(f"article.running[data-task='{short(task.name)}']")
                await running.wait_for()
            # The live output: the progress the handler reported, without a reload.
            await running.locator("pre").filter(has_text="step: rendering").wait_for()
            gates[1].set()
            await page.locator(f"article.running[data-task='{short(first.name)}']").wait_for(
                state="detached"
            )
            await page.get_by_role("tab", name="Completed").click()
            done = page.locator(f"[data-pane=completed] tr[data-task='{short(first.name)}']")
            await done.wait_for()
            assert "SUCCEEDED" in await done.inner_text()
            assert "built report 1" in await done.inner_text()
            await done.get_by_text("Open rollout").click()
            assert await done.locator(".pop code").inner_text() == "rollout-1"
            gates[2].set()
            await page.get_by_role("tab", name="Completed").click()
            await page.locator(
                f"[data-pane=completed] tr[data-task='{short(second.name)}'] .s-succeeded"
            ).wait_for()
            assert await page.evaluate("window.notReloaded") is True

            # The overview counts them in its throughput chart (finished per minute).
            await page.goto(server.http_base_url + "/")
            chart = page.locator("tr[data-queue='live'] svg.spark")
            label = await chart.get_attribute("aria-label") or ""
            per_minute = [int(n) for n in label.split(":")[1].split(",")]
            assert sum(per_minute) == 2
        finally:
            for gate in gates.values():
                gate.set()
            await worker.stop(5)
            await run


async def test_cancel_and_approve_from_the_page(
    server: ConveyorServer, keys: dict[str, str], signed_in: Any
) -> None:
    async with clients(server, keys) as (ops, _work):
        gated = await ops.create_task("deploy", {}, queue="ops", requires_approval=True)
        doomed = await ops.create_task("cleanup", {}, queue="ops")
        page = await signed_in("operator")
        await open_queue(page, server, "ops")

        row = page.locator(f"tr[data-task='{short(gated.name)}']")
        assert "AWAITING_APPROVAL" in await row.inner_text()
        await row.get_by_role("button", name="Approve").click()
        await page.get_by_role("status").filter(has_text="Task approved.").wait_for()
        approved = await ops.get_task(gated.name)
        assert approved.state == S.TASK_STATE_QUEUED
        assert approved.approval.approved

        await (
            page.locator(f"tr[data-task='{short(doomed.name)}']")
            .get_by_role("button", name="Cancel")
            .click()
        )
        await page.get_by_role("status").filter(has_text="Task cancelled.").wait_for()
        assert (await ops.get_task(doomed.name)).state == S.TASK_STATE_CANCELLED

        # And from the task page: reject with a comment.
        other = await ops.create_task("deploy", {}, queue="ops", requires_approval=True)
        await page.goto(f"{server.http_base_url}/ui/tasks/{short(other.name)}")
        await page.get_by_placeholder("comment").fill("not on a Friday")
        await page.get_by_role("button", name="Reject").click()
        await page.get_by_role("status").filter(has_text="Task rejected.").wait_for()
        rejected = await ops.get_task(other.name)
        assert rejected.state == S.TASK_STATE_CANCELLED
        assert not rejected.approval.approved


async def test_purge_shows_the_depth_and_sends_its_confirm_token(
    server: ConveyorServer, keys: dict[str, str], signed_in: Any
) -> None:
    async with clients(server, keys) as (ops, _work):
        for n in range(3):
            await ops.create_task("bulk", {"n": n}, queue="bulk")
        page = await signed_in("admin")
        await page.goto(f"{server.http_base_url}/ui/queues/bulk")
        await page.get_by_role("link", name="Purge").click()
        assert await page.locator(".depth").inner_text() == "3"

        # The depth changes under the confirmation: the purge is refused, nothing goes.
        await ops.create_task("bulk", {"n": 3}, queue="bulk")
        await page.get_by_role("button", name="Purge 3 tasks").click()
        await page.get_by_role("alert").wait_for()
        assert (await ops.get_queue("bulk")).stats.queued == 4
        assert await page.locator(".depth").inner_text() == "4"

        await page.get_by_role("button", name="Purge 4 tasks").click()
        await page.get_by_role("status").filter(has_text="Purged 4 queued tasks.").wait_for()
        assert (await ops.get_queue("bulk")).stats.queued == 0


async def test_the_overview_follows_the_event_stream(
    server: ConveyorServer, keys: dict[str, str], signed_in: Any
) -> None:
    async with clients(server, keys) as (ops, _work):
        page = await signed_in("viewer")
        await page.locator("#live[data-connected='1']").wait_for(state="attached")
        await page.evaluate("window.notReloaded = true")
        await ops.create_task("email.send", {}, queue="brand-new")
        row = page.locator("tr[data-queue='brand-new']")
        await row.wait_for()
        assert await page.evaluate("window.notReloaded") is True


async def test_cancelling_a_running_task_asks_its_worker_to_stop(
    server: ConveyorServer, keys: dict[str, str], signed_in: Any
) -> None:
    started = asyncio.Event()
    async with clients(server, keys) as (ops, work):
        task = await ops.create_task("long.job", {}, queue="long")
        worker = Worker(
            work, queues=["long"], concurrency=1, worker_id="w-long", lease_duration=1.5
        )

        @worker.task("long.job")
        async def job(ctx: TaskContext) -> None:
            started.set()
            await asyncio.to_thread(ctx.cancelled.wait, 30)

        run = asyncio.create_task(worker.arun())
        try:
            await started.wait()
            page = await signed_in("operator")
            await open_queue(page, server, "long")
            running = page.locator(f"article.running[data-task='{short(task.name)}']")
            await running.get_by_role("button", name="Cancel").click()
            await page.get_by_role("status").filter(has_text="Cancel requested").wait_for()
            assert (await ops.get_task(task.name)).cancel_requested
        finally:
            await worker.stop(5)
            await run


async def test_running_tasks_show_their_live_output(
    server: ConveyorServer, keys: dict[str, str], signed_in: Any
) -> None:
    """The task page's Output card and the Queue tab tail what a handler logs and
    prints, without a reload (#19 point 2)."""
    more, done = asyncio.Event(), asyncio.Event()
    async with clients(server, keys) as (ops, work):
        worker = Worker(work, queues=["chatty"], worker_id="w-chatty", capture_output=True)

        @worker.task("etl.load")
        async def load(ctx: TaskContext) -> None:
            ctx.log("loading users", rows=120)
            print("opened the dump")
            await more.wait()
            ctx.log("index rebuilt", level="warning")
            await done.wait()

        task = await ops.create_task("etl.load", queue="chatty")
        run = asyncio.create_task(worker.arun())
        try:
            page = await signed_in("viewer")
            await page.goto(f"{server.http_base_url}/ui/tasks/{short(task.name)}")
            await page.evaluate("window.notReloaded = true")
            output = page.locator("#output pre.output")
            await output.filter(has_text="loading users  rows=120").wait_for()
            await output.filter(has_text="opened the dump").wait_for()
            more.set()
            await output.locator(".log-err", has_text="index rebuilt").wait_for()
            assert await page.evaluate("window.notReloaded") is True

            await open_queue(page, server, "chatty")
            article = page.locator(f"article.running[data-task='{short(task.name)}']")
            await article.locator("pre.log").filter(has_text="index rebuilt").wait_for()
            assert "opened the dump" in await article.locator("pre.log").inner_text()
        finally:
            more.set()
            done.set()
            await worker.stop(5)
            await run
