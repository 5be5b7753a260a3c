"""The README's dashboard screenshots, taken from a realistic scene in a real browser:
the Queue tab (a running agent rollout with its live output, a completed one with its
Open rollout action, the webhook block with a delivery), a task page, the schedules.

Run with CONVEYOR_SCREENSHOTS=docs/images to refresh the committed images.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from threading import Thread
from typing import Any

import pytest
from google.protobuf import duration_pb2, field_mask_pb2

from conveyor.client import AsyncClient, TaskContext, Worker
from conveyor.server.app import ConveyorServer
from conveyor.server.loops.webhooks import WebhookLoop
from conveyor.server.settings import Settings
from conveyor.v1 import enums_pb2, project_pb2, schedule_pb2

S = enums_pb2


@pytest.fixture
def server_settings(server_settings: Settings) -> Settings:
    return server_settings.replace(webhook_allow=("127.0.0.1/32",))


@pytest.fixture
def hook_url() -> Iterator[str]:
    """A webhook receiver on loopback that answers 200."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/hooks/conveyor"
    httpd.shutdown()
    httpd.server_close()


def short(name: str) -> str:
    return name.rsplit("/", 1)[-1]


async def _schedules(admin: AsyncClient) -> None:
    specs = [
        (
            "nightly-report",
            "Nightly sales report",
            S.SCHEDULE_KIND_CRON,
            "30 2 * * *",
            "America/New_York",
            "report.build",
            "reports",
        ),
        (
            "weekly-digest",
            "Weekly digest",
            S.SCHEDULE_KIND_RRULE,
            "FREQ=WEEKLY;BYDAY=MO;BYHOUR=9;BYMINUTE=0",
            "Europe/Berlin",
            "digest.send",
            "mail",
        ),
        (
            "on-deploy",
            "Smoke tests after a deploy",
            S.SCHEDULE_KIND_EVENT,
            "deploy.*",
            "",
            "smoke.run",
            "agents",
        ),
    ]
    for schedule_id, title, kind, expression, zone, task_kind, queue in specs:
        await admin.schedules.CreateSchedule(
            schedule_pb2.CreateScheduleRequest(
                parent="projects/alpha",
                schedule_id=schedule_id,
                schedule=schedule_pb2.Schedule(
                    title=title,
                    spec=schedule_pb2.ScheduleSpec(kind=kind, expression=expression, timezone=zone),
                    task_template=schedule_pb2.TaskTemplate(kind=task_kind, queue=queue),
                ),
            )
        )
    name = "projects/alpha/schedules"
    await admin.schedules.RunScheduleNow(
        schedule_pb2.RunScheduleNowRequest(name=f"{name}/weekly-digest")
    )
    await admin.schedules.PauseSchedule(
        schedule_pb2.PauseScheduleRequest(
            name=f"{name}/on-deploy", notes="paused during the freeze"
        )
    )
    await admin.schedules.SnoozeSchedule(
        schedule_pb2.SnoozeScheduleRequest(
            name=f"{name}/nightly-report",
            delay=duration_pb2.Duration(seconds=3 * 3600),
            reason="warehouse migration",
        )
    )


async def test_dashboard_screenshots(
    server: ConveyorServer, keys: dict[str, str], signed_in: Any, shoot: Any, hook_url: str
) -> None:
    for loop in server.context.loops:
        if isinstance(loop, WebhookLoop):
            loop.interval = 0.1
    gate = asyncio.Event()
    target = server.grpc_target
    async with (
        AsyncClient(target, api_key=keys["admin"], project="alpha") as admin,
        AsyncClient(target, api_key=keys["worker"], project="alpha") as work,
    ):
        await admin.projects.UpdateProject(
            project_pb2.UpdateProjectRequest(
                project=project_pb2.Project(name="projects/alpha", callback_url=hook_url),
                update_mask=field_mask_pb2.FieldMask(paths=["callback_url"]),
            )
        )
        rollouts = [
            {"repo": "acme/web", "prompt": "Fix the flaky checkout test", "pr": 412},
            {"repo": "acme/web", "prompt": "Upgrade the payment SDK to v5", "pr": 413},
            {"repo": "acme/api", "prompt": "Add pagination to /orders"},
            {"repo": "acme/api", "prompt": "Document the retry headers"},
        ]
        done = await admin.create_task(
            "agent.rollout",
            rollouts[0],
            queue="agents",
            correlation_id="sprint-42",
            labels={"team": "checkout"},
        )
        for step in ("plan", "edit", "test"):
            await admin.create_task(
                "agent.step", {"step": step}, queue="steps", parent_task=done.name
            )
        running = await admin.create_task("agent.rollout", rollouts[1], queue="agents")
        for later in rollouts[2:]:
            await admin.create_task("agent.rollout", later, queue="agents")
        await admin.update_queue("agents", max_concurrency=1, rate_limit="30/m")
        await _schedules(admin)

        worker = Worker(
            work, queues=["agents"], concurrency=1, worker_id="runner-1", lease_duration=1.5
        )

        @worker.task("agent.rollout")
        async def rollout(ctx: TaskContext) -> dict[str, Any]:
            if ctx.input.get("pr") == 413:
                ctx.report_progress(
                    {
                        "step": "running tests",
                        "passed": 182,
                        "failed": 0,
                        "remaining": 41,
                        "last_line": "tests/payments/test_sdk_v5.py::test_refund PASSED",
                    }
                )
                await gate.wait()
            ctx.set_summary(f"Opened PR #{ctx.input['pr']}: {ctx.input['prompt'].lower()}")
            ctx.set_resume_token(f"rollout_{ctx.input['pr']}_7f3c2a9e41")
            return {
                "pull_request": f"https://git.example.com/acme/web/pull/{ctx.input['pr']}",
                "files_changed": 3,
                "tests": "182 passed",
            }

        run = asyncio.create_task(worker.arun())
        try:
            page = await signed_in("admin")
            await page.goto(f"{server.http_base_url}/ui/queues/agents")
            output = page.locator(f"article.running[data-task='{short(running.name)}'] pre")
            await output.filter(has_text="running tests").wait_for()
            recent = page.locator(f"[data-pane=queue] tr[data-task='{short(done.name)}']")
            await recent.wait_for()
            delivered = page.locator("#webhooks .s-delivered")
            while not await delivered.count():
                await page.reload()
                await output.filter(has_text="running tests").wait_for()
            await recent.get_by_text("Open rollout").click()
            await shoot(page, "dashboard-queue")

            await page.goto(f"{server.http_base_url}/ui/tasks/{short(done.name)}")
            await page.get_by_text("webhook.delivered").wait_for()
            await shoot(page, "dashboard-task")

            await page.goto(f"{server.http_base_url}/ui/schedules")
            await shoot(page, "dashboard-schedules")
        finally:
            gate.set()
            with contextlib.suppress(Exception):
                await worker.stop(5)
            await run
