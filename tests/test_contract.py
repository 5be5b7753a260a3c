"""The contract covers DESIGN.md section 4, and a running server serves all of it."""

from __future__ import annotations

import re

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2

from conveyor.server.app import ConveyorServer
from conveyor.server.rpc.rules import SERVICES
from conveyor.v1 import event_pb2, project_pb2

# DESIGN.md section 4, RPC by RPC (plus the webhook-secret pair of section 6, and
# UpdateApiKey, which sets ApiKey.rate_limits of section 11).
DESIGN_RPCS = {
    "TaskService": "CreateTask BatchCreateTasks GetTask ListTasks GetTaskTree CancelTask "
    "ApproveTask "
    "RejectTask BatchDeleteTasks ExportTasks "
    # Section 11 (issue #19 point 2): task logs.
    "AppendTaskLogs ListTaskLogs WatchTaskLogs",
    "QueueService": "ListQueues GetQueue UpdateQueue PauseQueue ResumeQueue",
    "WorkerService": "Connect LeaseTasks ExtendLease CompleteTask FailTask ReportTasks ListWorkers "
    "GetWorker",
    "ScheduleService": "CreateSchedule GetSchedule ListSchedules UpdateSchedule DeleteSchedule "
    "PauseSchedule ResumeSchedule CancelSchedule SnoozeSchedule RunScheduleNow PreviewSchedule",
    "CommandService": "RetryTask BatchRetryTasks PurgeQueue RestartWorker ResizePool AddConsumer "
    "CancelConsumer SetRateLimit GetCommand ListCommands VerifyAuditLog",
    "EventService": "WatchEvents ListEvents PublishEvent",
    "ProjectService": "CreateProject GetProject ListProjects UpdateProject CreateApiKey "
    "ListApiKeys UpdateApiKey "
    "DeleteApiKey GetWebhookSecret RotateWebhookSecret",
}


def test_every_design_rpc_is_in_the_contract() -> None:
    contract = {s.name: {m.name for m in s.methods} for s in SERVICES}
    assert contract == {service: set(rpcs.split()) for service, rpcs in DESIGN_RPCS.items()}


def test_streaming_shapes() -> None:
    methods = {f"{s.name}.{m.name}": m for s in SERVICES for m in s.methods}
    connect = methods["WorkerService.Connect"]
    assert connect.client_streaming and connect.server_streaming
    assert methods["EventService.WatchEvents"].server_streaming
    assert methods["TaskService.ExportTasks"].output_type.full_name == "google.api.HttpBody"


async def test_reflection_lists_all_seven_services(server: ConveyorServer) -> None:
    async with grpc.aio.insecure_channel(server.grpc_target) as channel:
        reflect = channel.stream_stream(
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        call = reflect(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)
        response = await call.read()
        call.cancel()
    assert isinstance(response, reflection_pb2.ServerReflectionResponse)
    listed = {s.name for s in response.list_services_response.service}
    assert {f"conveyor.v1.{name}" for name in DESIGN_RPCS} <= listed
    assert {"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= listed


@pytest.mark.parametrize("version", ["v1", "v1alpha"])
async def test_reflection_serves_v1_and_v1alpha(server: ConveyorServer, version: str) -> None:
    # v1 and v1alpha are the same messages in different packages, so the v1alpha classes
    # encode and decode both.
    service = f"grpc.reflection.{version}.ServerReflection"
    requests = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="conveyor.v1.TaskService"),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol=service),
    ]
    async with grpc.aio.insecure_channel(server.grpc_target) as channel:
        reflect = channel.stream_stream(
            f"/{service}/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        call = reflect(iter(requests), timeout=5)
        responses = [await call.read() for _ in requests]
        call.cancel()
    listing, task_file, own_file = (
        r for r in responses if isinstance(r, reflection_pb2.ServerReflectionResponse)
    )
    listed = {s.name for s in listing.list_services_response.service}
    assert {
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= listed

    def services(response: reflection_pb2.ServerReflectionResponse) -> set[str]:
        files = [
            descriptor_pb2.FileDescriptorProto.FromString(raw)
            for raw in response.file_descriptor_response.file_descriptor_proto
        ]
        return {f"{f.package}.{s.name}" for f in files for s in f.service}

    assert "conveyor.v1.TaskService" in services(task_file)
    assert service in services(own_file)


async def test_grpc_answers_echo_the_request_id(server: ConveyorServer, admin_key: str) -> None:
    auth = ("authorization", f"Bearer {admin_key}")
    async with grpc.aio.insecure_channel(server.grpc_target) as channel:
        get = channel.unary_unary(
            "/conveyor.v1.ProjectService/GetProject",
            request_serializer=project_pb2.GetProjectRequest.SerializeToString,
            response_deserializer=project_pb2.Project.FromString,
        )
        request = project_pb2.GetProjectRequest(name="projects/default")
        given = get(request, metadata=(auth, ("x-request-id", "req-42")), timeout=5)
        await given
        assert dict(await given.initial_metadata())["x-request-id"] == "req-42"

        made_up = get(request, metadata=(auth,), timeout=5)
        await made_up
        made_up_id = dict(await made_up.initial_metadata())["x-request-id"]
        assert isinstance(made_up_id, str) and re.fullmatch(r"[0-9a-f]{32}", made_up_id)

        # A refused call carries it too, so its log lines can be found.
        refused = get(request, metadata=(("x-request-id", "req-43"),), timeout=5)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await refused
        assert raised.value.code() is grpc.StatusCode.UNAUTHENTICATED
        assert dict(await refused.initial_metadata())["x-request-id"] == "req-43"


async def test_a_refused_stream_sends_no_headers_before_its_status(
    server: ConveyorServer, admin_key: str
) -> None:
    """The REST gateway answers 200 once a stream's headers arrive; a refused stream must
    therefore send its request id with the status (trailers), never headers first."""
    async with grpc.aio.insecure_channel(server.grpc_target) as channel:
        watch = channel.unary_stream(
            "/conveyor.v1.EventService/WatchEvents",
            request_serializer=event_pb2.WatchEventsRequest.SerializeToString,
            response_deserializer=event_pb2.Event.FromString,
        )
        request = event_pb2.WatchEventsRequest(parent="projects/default")
        refused = watch(request, metadata=(("x-request-id", "req-44"),), timeout=5)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await refused.read()
        assert raised.value.code() is grpc.StatusCode.UNAUTHENTICATED
        assert "x-request-id" not in dict(await refused.initial_metadata())
        assert dict(await refused.trailing_metadata())["x-request-id"] == "req-44"

        auth = ("authorization", f"Bearer {admin_key}")
        admitted = watch(request, metadata=(auth, ("x-request-id", "req-45")), timeout=5)
        assert dict(await admitted.initial_metadata())["x-request-id"] == "req-45"
        admitted.cancel()
