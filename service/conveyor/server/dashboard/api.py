"""The dashboard's gRPC client: one channel, stubs per service, the session as bearer."""

from __future__ import annotations

from typing import Any

import grpc

from conveyor.client._limits import MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES
from conveyor.client._tracing import current_traceparent
from conveyor.v1 import (
    command_pb2_grpc,
    event_pb2_grpc,
    project_pb2_grpc,
    queue_pb2_grpc,
    schedule_pb2_grpc,
    task_service_pb2_grpc,
    worker_pb2_grpc,
)

CALL_TIMEOUT_SECONDS = 30.0


class Channel:
    """A lazily opened channel to the gRPC listener (this process's, by default)."""

    def __init__(self, target: str) -> None:
        self.target = target
        self._channel: grpc.aio.Channel | None = None

    def get(self) -> grpc.aio.Channel:
        if self._channel is None:
            # Receive what the server may send (conveyor.client._limits), not gRPC's 4 MiB.
            self._channel = grpc.aio.insecure_channel(
                self.target,
                options=[
                    ("grpc.max_receive_message_length", MAX_RESPONSE_BYTES),
                    ("grpc.max_send_message_length", MAX_REQUEST_BYTES),
                ],
            )
        return self._channel

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None


class Api:
    """The services, called on behalf of one session."""

    def __init__(self, channel: grpc.aio.Channel, token: str) -> None:
        self.metadata = (("authorization", f"Bearer {token}"),)
        self.tasks = task_service_pb2_grpc.TaskServiceStub(channel)
        self.queues = queue_pb2_grpc.QueueServiceStub(channel)
        self.workers = worker_pb2_grpc.WorkerServiceStub(channel)
        self.schedules = schedule_pb2_grpc.ScheduleServiceStub(channel)
        self.commands = command_pb2_grpc.CommandServiceStub(channel)
        self.events = event_pb2_grpc.EventServiceStub(channel)
        self.projects = project_pb2_grpc.ProjectServiceStub(channel)

    async def call(self, method: Any, request: Any) -> Any:
        return await method(request, metadata=self._metadata(), timeout=CALL_TIMEOUT_SECONDS)

    def stream(self, method: Any, request: Any) -> Any:
        return method(request, metadata=self._metadata())

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        # With tracing on, the page's request span is the call's parent.
        traceparent = current_traceparent()
        if traceparent is None:
            return self.metadata
        return (*self.metadata, ("traceparent", traceparent))
