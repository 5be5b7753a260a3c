"""One trace from a producer's CreateTask to the handler's span, across two processes
(#22 point 1).

The server is a `conveyor serve` subprocess with tracing turned on by the standard
environment (OTEL_TRACES_EXPORTER=console: its finished spans go to its stdout, here a
file). The producer and the SDK Worker run in the test process with an in-memory
exporter; the client sends the producer's current span as the call's traceparent. The
trace must read: producer span -> the server's CreateTask span -> the worker's
`process <kind>` span -> a span the handler opened itself.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from conveyor.client import AsyncClient, TaskContext, Worker
from conveyor.server.app import ConveyorServer
from conveyor.v1 import enums_pb2, task_pb2, task_service_pb2

KIND = "traced.work"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN = "00f067aa0ba902b7"


def _conveyor() -> list[str]:
    script = Path(sys.executable).parent / "conveyor"
    return [str(script)] if script.exists() else [sys.executable, "-m", "conveyor.client.cli"]


def _serve(data_dir: Path, database_url: str, spans: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONVEYOR_", "OTEL_"))}
    env.update(
        OTEL_TRACES_EXPORTER="console",
        OTEL_SERVICE_NAME="conveyor-under-test",
        OTEL_BSP_SCHEDULE_DELAY="100",
    )
    command = [
        *_conveyor(), "serve", "--data-dir", str(data_dir), "--database-url", database_url,
        "--grpc-address", "127.0.0.1:0", "--http-address", "127.0.0.1:0",
    ]  # fmt: skip
    with spans.open("wb") as out, log.open("wb") as err:
        return subprocess.Popen(command, env=env, stdout=out, stderr=err)


def _wait_for_file(path: Path, process: subprocess.Popen[bytes], log: Path) -> None:
    for _ in range(1200):  # 60 s
        if path.exists():
            return
        assert process.poll() is None, log.read_text()
        time.sleep(0.05)
    raise AssertionError(f"no {path} after 60 s:\n{log.read_text()}")


def _console_spans(text: str) -> list[dict[str, Any]]:
    """The spans ConsoleSpanExporter wrote: JSON objects one after another."""
    decoder = json.JSONDecoder()
    spans: list[dict[str, Any]] = []
    at = 0
    while True:
        while at < len(text) and text[at].isspace():
            at += 1
        if at >= len(text):
            return spans
        span, at = decoder.raw_decode(text, at)
        spans.append(span)


def _hex(span: ReadableSpan, part: str) -> str:
    assert span.context is not None
    value = span.context.trace_id if part == "trace" else span.context.span_id
    return f"0x{value:032x}" if part == "trace" else f"0x{value:016x}"


async def test_one_trace_runs_from_the_producer_through_the_server_to_the_handler(
    database_url: str, tmp_path: Path
) -> None:
    data_dir, spans_file, log = tmp_path / "data", tmp_path / "spans.json", tmp_path / "log"
    server = _serve(data_dir, database_url, spans_file, log)
    try:
        await asyncio.to_thread(_wait_for_file, data_dir / "server.json", server, log)
        target = json.loads((data_dir / "server.json").read_text())["grpc"]
        key = (data_dir / "admin.key").read_text().strip()

        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        tracer = provider.get_tracer("producer")

        async def work(ctx: TaskContext) -> str:
            # The handler's own work joins the handler's span.
            with tracer.start_as_current_span("handler.inner"):
                return "done"

        async with AsyncClient(target, api_key=key) as client:
            worker = Worker(client, queues=["traced"], tracer_provider=provider)
            worker.task(KIND)(work)
            running = asyncio.create_task(worker.arun())
            try:
                with tracer.start_as_current_span("producer.enqueue", kind=SpanKind.PRODUCER):
                    # The client sends the current span as the call's traceparent.
                    created = await client.create_task(KIND, queue="traced")
                done = await client.wait_for_task(created.name)
                assert done.state == enums_pb2.TASK_STATE_SUCCEEDED
            finally:
                await worker.stop()
                await running
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(60)
    assert server.returncode == 0, log.read_text()

    local = {s.name: s for s in exporter.get_finished_spans()}
    producer, handler, inner = (
        local["producer.enqueue"],
        local[f"process {KIND}"],
        local["handler.inner"],
    )
    trace_id = _hex(producer, "trace")

    # The server process's spans: its CreateTask call is the producer's child...
    remote = [
        s for s in _console_spans(spans_file.read_text()) if s["context"]["trace_id"] == trace_id
    ]
    calls = [s for s in remote if s["name"] == "/conveyor.v1.TaskService/CreateTask"]
    assert len(calls) == 1, [s["name"] for s in remote]
    call = calls[0]
    assert call["kind"] == "SpanKind.SERVER"
    assert call["parent_id"] == _hex(producer, "span")
    assert call["resource"]["attributes"]["service.name"] == "conveyor-under-test"
    # ... with the insert among its statements, in the same trace.
    assert any(s["attributes"].get("db.system") == "postgresql" for s in remote)

    # ...and the handler's span is the CreateTask span's child, in this process.
    assert _hex(handler, "trace") == trace_id
    assert handler.kind is SpanKind.CONSUMER
    assert (
        handler.parent is not None
        and f"0x{handler.parent.span_id:016x}" == call["context"]["span_id"]
    )
    assert handler.attributes is not None
    assert handler.attributes["conveyor.task.name"] == created.name
    assert handler.attributes["messaging.destination.name"] == "traced"
    assert inner.parent is not None and inner.parent.span_id == handler.context.span_id


async def test_conveyor_worker_traces_its_handlers_as_the_otel_environment_says(
    server: ConveyorServer, admin_key: str, tmp_path: Path
) -> None:
    # This server does not trace: the task keeps the caller's traceparent as it came.
    (tmp_path / "traced_tasks.py").write_text(
        "from opentelemetry import trace\n"
        "from conveyor.client import task\n\n"
        "@task('cli.traced')\n"
        "def work(ctx):\n"
        "    with trace.get_tracer('handler').start_as_current_span('handler.inner'):\n"
        "        return 'done'\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONVEYOR_", "OTEL_"))}
    env.update(
        CONVEYOR_TARGET=server.grpc_target,
        CONVEYOR_API_KEY=admin_key,
        OTEL_TRACES_EXPORTER="console",
        OTEL_BSP_SCHEDULE_DELAY="100",
    )
    spans_file, log = tmp_path / "spans.json", tmp_path / "worker.log"
    with spans_file.open("wb") as out, log.open("wb") as err:
        worker = await asyncio.create_subprocess_exec(
            *_conveyor(), "worker", "--import", "traced_tasks", "--queues", "cli-traced",
            cwd=tmp_path, env=env, stdout=out, stderr=err,
        )  # fmt: skip
    try:
        async with AsyncClient(server.grpc_target, api_key=admin_key) as client:
            created = await client.tasks.CreateTask(
                task_service_pb2.CreateTaskRequest(
                    parent="projects/default",
                    task=task_pb2.Task(kind="cli.traced", queue="cli-traced"),
                ),
                metadata=(("traceparent", f"00-{TRACE_ID}-{PARENT_SPAN}-01"),),
            )
            done = await client.wait_for_task(created.name)
            assert done.state == enums_pb2.TASK_STATE_SUCCEEDED, log.read_text()
    finally:
        worker.send_signal(signal.SIGTERM)
        await asyncio.wait_for(worker.wait(), 30)
    assert worker.returncode == 0, log.read_text()
    spans = {s["name"]: s for s in _console_spans(spans_file.read_text())}
    handler, inner = spans["process cli.traced"], spans["handler.inner"]
    assert handler["context"]["trace_id"] == f"0x{TRACE_ID}"
    assert handler["parent_id"] == f"0x{PARENT_SPAN}"
    assert handler["kind"] == "SpanKind.CONSUMER"
    assert handler["resource"]["attributes"]["service.name"] == "conveyor-worker"
    # The CLI set the global provider: the handler's own span joins the handler's.
    assert inner["parent_id"] == handler["context"]["span_id"]
