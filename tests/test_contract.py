"""The contract covers DESIGN.md section 4, and a running server serves all of it."""

from __future__ import annotations

import grpc
from grpc_reflection.v1alpha import reflection_pb2

from conveyor.server.app import ConveyorServer
from conveyor.server.rpc.rules import SERVICES

# DESIGN.md section 4, RPC by RPC (plus the webhook-secret pair of section 6).
DESIGN_RPCS = {
    "TaskService": "CreateTask BatchCreateTasks GetTask ListTasks GetTaskTree CancelTask "
    "ApproveTask "
    "RejectTask BatchDeleteTasks ExportTasks",
    "QueueService": "ListQueues GetQueue UpdateQueue PauseQueue ResumeQueue",
    "WorkerService": "Connect LeaseTasks ExtendLease CompleteTask FailTask ReportTasks ListWorkers "
    "GetWorker",
    "ScheduleService": "CreateSchedule GetSchedule ListSchedules UpdateSchedule DeleteSchedule "
    "PauseSchedule ResumeSchedule CancelSchedule SnoozeSchedule RunScheduleNow PreviewSchedule",
    "CommandService": "RetryTask BatchRetryTasks PurgeQueue RestartWorker ResizePool AddConsumer "
    "CancelConsumer SetRateLimit GetCommand ListCommands VerifyAuditLog",
    "EventService": "WatchEvents ListEvents PublishEvent",
    "ProjectService": "CreateProject GetProject ListProjects UpdateProject CreateApiKey "
    "ListApiKeys "
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
