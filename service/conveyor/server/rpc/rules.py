"""Who may call what, read from the `conveyor.v1.auth` option of every contract method."""

from __future__ import annotations

from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

from conveyor.v1 import (
    auth_pb2,
    command_pb2,
    event_pb2,
    project_pb2,
    queue_pb2,
    schedule_pb2,
    task_service_pb2,
    worker_pb2,
)

SERVICES: tuple[ServiceDescriptor, ...] = (
    task_service_pb2.DESCRIPTOR.services_by_name["TaskService"],
    queue_pb2.DESCRIPTOR.services_by_name["QueueService"],
    worker_pb2.DESCRIPTOR.services_by_name["WorkerService"],
    schedule_pb2.DESCRIPTOR.services_by_name["ScheduleService"],
    command_pb2.DESCRIPTOR.services_by_name["CommandService"],
    event_pb2.DESCRIPTOR.services_by_name["EventService"],
    project_pb2.DESCRIPTOR.services_by_name["ProjectService"],
)


def method_rules() -> dict[str, auth_pb2.MethodAuth]:
    """Maps `/conveyor.v1.Service/Method` to its auth rule, for every contract method."""
    rules: dict[str, auth_pb2.MethodAuth] = {}
    for service in SERVICES:
        for method in service.methods:
            options = method.GetOptions()
            if not options.HasExtension(auth_pb2.auth):
                raise RuntimeError(f"{method.full_name} has no conveyor.v1.auth option")
            rules[f"/{service.full_name}/{method.name}"] = options.Extensions[auth_pb2.auth]
    return rules


def request_types() -> dict[str, type[Message]]:
    """Maps `/conveyor.v1.Service/Method` to its request message class, for every
    contract method (the interceptor decodes requests itself; see decoding.py)."""
    return {
        f"/{service.full_name}/{method.name}": GetMessageClass(method.input_type)
        for service in SERVICES
        for method in service.methods
    }
