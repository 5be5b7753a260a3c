"""Spans of the work the server does on its own (#22 point 1): schedule fires (timed, and
RunScheduleNow under its caller's trace) and webhook delivery attempts (in the trace of
the request that created the task). The server traces into an in-memory exporter.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode
from tracing_support import Spans, traced_hooks  # type: ignore[import-not-found]

from conveyor.client import AsyncClient
from conveyor.server.app import ConveyorServer, ServerHooks
from conveyor.server.domain.webhooks import WebhookPolicy
from conveyor.server.loops.webhooks import WebhookLoop
from conveyor.server.settings import Settings
from conveyor.v1 import enums_pb2, schedule_pb2, task_pb2, task_service_pb2, worker_pb2

PARENT = "projects/default"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


@pytest.fixture
def exporter() -> Spans:
    return Spans()


@pytest.fixture
def server_hooks(exporter: Spans) -> ServerHooks:
    hooks: ServerHooks = traced_hooks(exporter)
    return hooks


@pytest.fixture
def server_settings(server_settings: Settings) -> Settings:
    return server_settings.replace(webhook_allow=("127.0.0.1/32",))


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[int]]]:
    """A local HTTP receiver answering 500 once, then 204: (its URL, statuses sent)."""
    sent: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            status = 500 if not sent else 204
            sent.append(status)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/hook", sent
    httpd.shutdown()
    httpd.server_close()


def _span_id(span: ReadableSpan) -> str:
    assert span.context is not None
    return f"{span.context.span_id:016x}"


def _parent(span: ReadableSpan) -> str | None:
    return f"{span.parent.span_id:016x}" if span.parent is not None else None


async def _lease(client: AsyncClient, queue: str) -> task_pb2.Lease:
    while True:
        response = await client.workers.LeaseTasks(
            worker_pb2.LeaseTasksRequest(parent=PARENT, worker="w", queues=[queue], max_tasks=1)
        )
        if response.leases:
            return response.leases[0]
        await asyncio.sleep(0.05)


def _schedule(schedule_id: str, expression: str, queue: str) -> schedule_pb2.CreateScheduleRequest:
    return schedule_pb2.CreateScheduleRequest(
        parent=PARENT,
        schedule_id=schedule_id,
        schedule=schedule_pb2.Schedule(
            spec=schedule_pb2.ScheduleSpec(
                kind=enums_pb2.SCHEDULE_KIND_CRON, expression=expression
            ),
            task_template=schedule_pb2.TaskTemplate(kind=f"{schedule_id}.kind", queue=queue),
        ),
    )


async def test_a_timed_fire_is_a_span_and_its_task_continues_it(
    server: ConveyorServer, admin_key: str, exporter: Spans
) -> None:
    async with AsyncClient(server.grpc_target, api_key=admin_key) as client:
        # Every second: the scheduler loop fires it within a pass or two.
        await client.schedules.CreateSchedule(_schedule("ticker", "* * * * * *", "ticks"))
        async with asyncio.timeout(30):
            lease = await _lease(client, "ticks")
    fires = [s for s in exporter.get_finished_spans() if s.name == "schedule fire"]
    assert fires
    fire = next(s for s in fires if lease.traceparent.split("-")[2] == _span_id(s))
    assert fire.kind is SpanKind.PRODUCER
    assert fire.attributes is not None
    assert fire.attributes["conveyor.schedule.name"] == f"{PARENT}/schedules/ticker"
    assert fire.attributes["messaging.destination.name"] == "ticks"


async def test_run_now_fires_under_the_callers_trace(
    server: ConveyorServer, admin_key: str, exporter: Spans
) -> None:
    async with AsyncClient(server.grpc_target, api_key=admin_key) as client:
        created = await client.schedules.CreateSchedule(_schedule("yearly", "0 0 1 1 *", "now"))
        await client.schedules.RunScheduleNow(
            schedule_pb2.RunScheduleNowRequest(name=created.name),
            metadata=(("traceparent", TRACEPARENT),),
        )
        lease = await _lease(client, "now")
    spans = exporter.get_finished_spans()
    (call,) = [s for s in spans if s.name == "/conveyor.v1.ScheduleService/RunScheduleNow"]
    (fire,) = [s for s in spans if s.name == "schedule fire"]
    assert _parent(call) == "00f067aa0ba902b7"
    assert _parent(fire) == _span_id(call)
    assert lease.traceparent == f"00-{TRACE_ID}-{_span_id(fire)}-01"


async def test_each_webhook_attempt_is_a_client_span_in_the_tasks_trace(
    server: ConveyorServer,
    admin_key: str,
    exporter: Spans,
    receiver: tuple[str, list[int]],
) -> None:
    url, sent = receiver
    loop = next(lp for lp in server.context.loops if isinstance(lp, WebhookLoop))
    loop.policy = WebhookPolicy(initial_backoff=0.05, max_backoff=0.2, timeout=2.0, lease=5.0)
    async with AsyncClient(server.grpc_target, api_key=admin_key) as client:
        task = await client.tasks.CreateTask(
            task_service_pb2.CreateTaskRequest(
                parent=PARENT, task=task_pb2.Task(kind="hooked", queue="hooks", callback_url=url)
            ),
            metadata=(("traceparent", TRACEPARENT),),
        )
        await client.cancel_task(task.name, "done")

    failed, delivered = await exporter.wait_for("webhook task.cancelled", 2)
    assert sent[:2] == [500, 204]
    (create,) = [
        s for s in exporter.get_finished_spans() if s.name == "/conveyor.v1.TaskService/CreateTask"
    ]
    for attempt, number, status in ((failed, 1, 500), (delivered, 2, 204)):
        assert attempt.kind is SpanKind.CLIENT
        assert attempt.context is not None and f"{attempt.context.trace_id:032x}" == TRACE_ID
        assert _parent(attempt) == _span_id(create)
        assert attempt.attributes is not None
        assert attempt.attributes["conveyor.webhook.attempt"] == number
        assert attempt.attributes["http.response.status_code"] == status
        assert attempt.attributes["conveyor.task.name"] == task.name
    assert failed.status.status_code is StatusCode.ERROR
    assert delivered.status.status_code is not StatusCode.ERROR
