"""OpenTelemetry in the server (#22 point 1): the OTEL_* rule, spans for gRPC calls, REST
requests and database statements, and trace ids in the log lines.

The server gets its own TracerProvider with an in-memory exporter (ServerHooks.tracing),
so nothing here touches the process's global provider.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind
from tracing_support import Spans, traced_hooks  # type: ignore[import-not-found]

from conveyor.client import AsyncClient
from conveyor.client._tracing import exporter_names, provider_from_env, valid_traceparent
from conveyor.server.app import ConveyorServer, ServerHooks
from conveyor.server.logging import configure_logging
from conveyor.server.settings import Settings
from conveyor.server.tracing import Tracing
from conveyor.v1 import task_pb2, task_service_pb2

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_SPAN}-01"


@pytest.fixture
def exporter() -> Spans:
    return Spans()


@pytest.fixture
def server_hooks(exporter: Spans) -> ServerHooks:
    hooks: ServerHooks = traced_hooks(exporter)
    return hooks


@pytest.fixture
def server_settings(server_settings: Settings) -> Settings:
    # INFO: a refused call's "rpc" line is written, and must name its span.
    return server_settings.replace(log_level="info")


def _in_trace(spans: tuple[ReadableSpan, ...], trace_id: str) -> list[ReadableSpan]:
    return [s for s in spans if s.context is not None and f"{s.context.trace_id:032x}" == trace_id]


def _parent_id(span: ReadableSpan) -> str | None:
    return f"{span.parent.span_id:016x}" if span.parent is not None else None


def test_the_otel_environment_decides_whether_tracing_is_on() -> None:
    assert exporter_names({}) == []
    assert exporter_names({"OTEL_SERVICE_NAME": "x"}) == []
    assert exporter_names({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}) == ["otlp"]
    assert exporter_names({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4317"}) == ["otlp"]
    assert exporter_names({"OTEL_TRACES_EXPORTER": "console,otlp"}) == ["console", "otlp"]
    assert exporter_names({"OTEL_TRACES_EXPORTER": "none"}) == []
    off = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}
    assert exporter_names(off) == []
    # An endpoint with the exporter named "none" stays off.
    named_none = {"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "x"}
    assert exporter_names(named_none) == []
    assert provider_from_env({}, "conveyor") is None
    with pytest.raises(ValueError, match="'nope'"):
        provider_from_env({"OTEL_TRACES_EXPORTER": "nope"}, "conveyor")


def test_a_traceparent_is_kept_only_when_valid() -> None:
    assert valid_traceparent(TRACEPARENT) == TRACEPARENT
    assert valid_traceparent(TRACEPARENT.upper().encode()) == TRACEPARENT
    assert valid_traceparent(f"00-{'0' * 32}-{PARENT_SPAN}-01") is None
    assert valid_traceparent(f"00-{TRACE_ID}-{'0' * 16}-01") is None
    assert valid_traceparent(f"ff-{TRACE_ID}-{PARENT_SPAN}-01") is None
    assert valid_traceparent(f"{TRACEPARENT}-extra") is None  # version 00 has 4 fields
    assert valid_traceparent(f"01-{TRACE_ID}-{PARENT_SPAN}-01-future") == (
        f"01-{TRACE_ID}-{PARENT_SPAN}-01"
    )
    assert valid_traceparent("garbage") is None
    assert valid_traceparent(None) is None


def test_an_unknown_exporter_leaves_tracing_off_with_a_warning(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("info")
    assert Tracing.from_env({"OTEL_TRACES_EXPORTER": "nope"}) is None
    warning = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert warning["event"] == "tracing off" and "'nope'" in warning["reason"]


def test_with_tracing_off_the_server_imports_nothing_of_opentelemetry() -> None:
    code = (
        "import sys\n"
        "import conveyor.server.app, conveyor.server.services, conveyor.client\n"
        "from conveyor.server.tracing import Tracing\n"
        "assert Tracing.from_env({}) is None\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


async def test_a_grpc_call_is_a_span_under_the_callers_traceparent_with_its_statements(
    server: ConveyorServer, admin_key: str, exporter: Spans
) -> None:
    async with AsyncClient(server.grpc_target, api_key=admin_key) as client:
        await client.tasks.CreateTask(
            task_service_pb2.CreateTaskRequest(
                parent="projects/default", task=task_pb2.Task(kind="traced.grpc")
            ),
            metadata=(("traceparent", TRACEPARENT),),
        )
    spans = _in_trace(exporter.get_finished_spans(), TRACE_ID)
    calls = [s for s in spans if s.name == "/conveyor.v1.TaskService/CreateTask"]
    assert len(calls) == 1
    call = calls[0]
    assert call.kind is SpanKind.SERVER
    assert _parent_id(call) == PARENT_SPAN
    assert call.context is not None
    # The insert runs in the batcher's flush, outside the call's context: its span
    # joins the trace through the task's stored trace context, the call's span.
    (insert,) = [s for s in spans if s.name == "insert tasks"]
    assert _parent_id(insert) == f"{call.context.span_id:016x}"
    assert insert.context is not None
    statements = [s for s in spans if _parent_id(s) == f"{insert.context.span_id:016x}"]
    assert [s.attributes and s.attributes.get("db.system") for s in statements] == ["postgresql"]
    # Named by their operation (our .sql files start with comments).
    assert statements[0].name == "WITH"
    assert not [s.name for s in exporter.get_finished_spans() if s.name.startswith("--")]


async def test_concurrent_creates_each_reach_the_insert_that_carried_them(
    server: ConveyorServer, admin_key: str, exporter: Spans
) -> None:
    traces = [f"{n:032x}" for n in range(1, 6)]
    async with AsyncClient(server.grpc_target, api_key=admin_key) as client:
        await asyncio.gather(
            *(
                client.tasks.CreateTask(
                    task_service_pb2.CreateTaskRequest(
                        parent="projects/default", task=task_pb2.Task(kind="traced.many")
                    ),
                    metadata=(("traceparent", f"00-{trace}-{PARENT_SPAN}-01"),),
                )
                for trace in traces
            )
        )
    spans = exporter.get_finished_spans()
    inserts = [s for s in spans if s.name == "insert tasks"]
    for trace in traces:
        (call,) = [
            s for s in _in_trace(spans, trace) if s.name == "/conveyor.v1.TaskService/CreateTask"
        ]
        assert call.context is not None
        # A flush of one is the call's child; a flush of several links to each call.
        carried = [
            s
            for s in inserts
            if s.parent == call.context
            or (s.parent is not None and s.parent.span_id == call.context.span_id)
            or any(link.context.span_id == call.context.span_id for link in s.links)
        ]
        assert len(carried) == 1, trace


async def test_a_rest_request_is_a_span_and_its_grpc_call_a_child_of_it(
    server: ConveyorServer, admin_key: str, exporter: Spans
) -> None:
    async with httpx.AsyncClient(base_url=server.http_base_url) as http:
        answer = await http.get(
            "/v1/projects/default/tasks",
            headers={"authorization": f"Bearer {admin_key}", "traceparent": TRACEPARENT},
        )
    assert answer.status_code == 200
    spans = _in_trace(exporter.get_finished_spans(), TRACE_ID)
    rest = [s for s in spans if s.kind is SpanKind.SERVER and _parent_id(s) == PARENT_SPAN]
    assert len(rest) == 1, [(s.name, s.kind) for s in spans]
    assert rest[0].attributes is not None
    assert rest[0].attributes.get("http.method", rest[0].attributes.get("http.request.method"))
    assert rest[0].context is not None
    rest_id = f"{rest[0].context.span_id:016x}"
    calls = [s for s in spans if s.name == "/conveyor.v1.TaskService/ListTasks"]
    assert len(calls) == 1
    # Its ancestors lead to the REST span.
    by_id = {f"{s.context.span_id:016x}": s for s in spans if s.context is not None}
    seen: list[str] = []
    parent = _parent_id(calls[0])
    while parent is not None:
        seen.append(parent)
        above = by_id.get(parent)
        parent = _parent_id(above) if above is not None else None
    assert rest_id in seen


async def test_a_log_line_written_inside_a_call_names_its_trace_and_span(
    server: ConveyorServer,
    admin_key: str,
    exporter: Spans,
    capfd: pytest.CaptureFixture[str],
) -> None:
    async with AsyncClient(server.grpc_target, api_key=admin_key) as client:
        with pytest.raises(Exception, match="does not exist"):
            await client.tasks.GetTask(
                task_service_pb2.GetTaskRequest(
                    name="projects/default/tasks/01900000-0000-7000-8000-000000000000"
                ),
                metadata=(("traceparent", TRACEPARENT),),
            )
    lines = [json.loads(line) for line in capfd.readouterr().err.splitlines() if line[:1] == "{"]
    rpc = [line for line in lines if line.get("event") == "rpc" and line.get("code") == "NOT_FOUND"]
    assert rpc, lines
    assert rpc[-1]["trace_id"] == TRACE_ID
    call = [
        s
        for s in _in_trace(exporter.get_finished_spans(), TRACE_ID)
        if s.name == "/conveyor.v1.TaskService/GetTask"
    ]
    assert call and call[0].context is not None
    assert rpc[-1]["span_id"] == f"{call[0].context.span_id:016x}"
    # The span says how the call ended (5: NOT_FOUND).
    assert call[0].attributes is not None
    assert call[0].attributes["rpc.grpc.status_code"] == 5


async def test_a_dashboard_page_is_a_span_and_its_grpc_calls_its_children(
    server: ConveyorServer, admin_key: str, exporter: Spans
) -> None:
    async with httpx.AsyncClient(base_url=server.http_base_url, timeout=10) as http:
        form = await http.get("/ui/sign-in")
        token = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert token is not None
        signed = await http.post("/ui/sign-in", data={"csrf": token.group(1), "api_key": admin_key})
        assert signed.status_code == 303, signed.text
        exporter.clear()
        page = await http.get("/ui/queues", headers={"traceparent": TRACEPARENT})
        assert page.status_code == 200
    spans = _in_trace(exporter.get_finished_spans(), TRACE_ID)
    (request,) = [s for s in spans if s.kind is SpanKind.SERVER and _parent_id(s) == PARENT_SPAN]
    assert request.context is not None
    calls = [s for s in spans if s.name.startswith("/conveyor.v1.")]
    assert calls, [s.name for s in spans]
    by_id = {f"{s.context.span_id:016x}": s for s in spans if s.context is not None}
    for call in calls:
        parent = _parent_id(call)
        while parent is not None and parent != f"{request.context.span_id:016x}":
            above = by_id.get(parent)
            parent = _parent_id(above) if above is not None else None
        assert parent is not None, call.name
