"""An enum number the contract does not define is INVALID_ARGUMENT naming the field.

The requests are found by walking the descriptors: every enum field of every request
message of every RPC, nested ones too, gets a number its enum lacks. A new field or
method is covered without touching this file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf.descriptor import (
    Descriptor,
    EnumDescriptor,
    FieldDescriptor,
    MethodDescriptor,
)
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from google.rpc import error_details_pb2
from grpc_status import rpc_status

# Shared with the auth matrix: a request carrying a well-formed resource name.
from test_auth_matrix import build_request  # type: ignore[import-not-found]

from conveyor.server.app import ConveyorServer
from conveyor.server.gateway.descriptors import enum_of, is_map, message_of
from conveyor.server.rpc.decoding import check_enums
from conveyor.server.rpc.rules import SERVICES
from conveyor.v1 import enums_pb2, schedule_pb2

UNKNOWN = 4242


@dataclass(frozen=True)
class Step:
    field: FieldDescriptor
    index: bool  # a repeated field: one element
    key: bool  # a map field: one entry, key "k"


def enum_paths(descriptor: Descriptor, seen: tuple[str, ...] = ()) -> list[list[Step]]:
    """Every way down to an enum field of `descriptor` (each recursive type once)."""
    found: list[list[Step]] = []
    for field in descriptor.fields:
        step = Step(field, field.is_repeated and not is_map(field), is_map(field))
        value = message_of(field).fields_by_name["value"] if is_map(field) else field
        if value.type == FieldDescriptor.TYPE_ENUM:
            found.append([step])
            continue
        if value.type != FieldDescriptor.TYPE_MESSAGE:
            continue
        inner = message_of(value)
        if inner.full_name.startswith("google.") or inner.full_name in seen:
            continue
        for rest in enum_paths(inner, (*seen, descriptor.full_name)):
            found.append([step, *rest])
    return found


def enum_at(path: list[Step]) -> EnumDescriptor:
    last = path[-1].field
    return enum_of(message_of(last).fields_by_name["value"] if is_map(last) else last)


def label(path: list[Step]) -> str:
    parts = []
    for step in path:
        suffix = "[0]" if step.index else "[k]" if step.key else ""
        parts.append(step.field.name + suffix)
    return ".".join(parts)


def build(method: MethodDescriptor, path: list[Step]) -> Message:
    """The method's request with UNKNOWN at the end of `path`."""
    request: Message = build_request(
        method, "default"
    )  # with its resource name, so only the enum is wrong
    target: Any = request
    for step in path[:-1]:
        container = getattr(target, step.field.name)
        target = container["k"] if step.key else container.add() if step.index else container
    last = path[-1]
    if last.key:
        getattr(target, last.field.name)["k"] = UNKNOWN
    elif last.index:
        getattr(target, last.field.name).append(UNKNOWN)
    else:
        setattr(target, last.field.name, UNKNOWN)
    return request


CASES = [
    (method, path)
    for service in SERVICES
    for method in service.methods
    for path in enum_paths(method.input_type)
]


def test_the_walk_finds_nested_enums() -> None:
    labels = {f"{m.name}:{label(p)}" for m, p in CASES}
    assert "CreateSchedule:schedule.spec.kind" in labels
    assert "PreviewSchedule:schedule.spec.kind" in labels
    assert "ListTasks:filter.states[0]" in labels
    assert "CreateTask:task.retry_policy.backoff" in labels
    assert any(lbl.startswith("BatchCreateTasks:requests[0].task.") for lbl in labels)
    for _, path in CASES:
        assert enum_at(path).values_by_number.get(UNKNOWN) is None


async def call(
    channel: grpc.aio.Channel, method: MethodDescriptor, request: Message, key: str
) -> grpc.aio.AioRpcError | None:
    path = f"/{method.containing_service.full_name}/{method.name}"
    kwargs: dict[str, Any] = {
        "request_serializer": lambda m: m.SerializeToString(),
        "response_deserializer": GetMessageClass(method.output_type).FromString,
    }
    metadata = (("authorization", f"Bearer {key}"),)
    try:
        if method.client_streaming and method.server_streaming:
            bidi = channel.stream_stream(path, **kwargs)(
                iter([request]), metadata=metadata, timeout=10
            )
            async for _ in bidi:
                break
            bidi.cancel()
        elif method.server_streaming:
            stream = channel.unary_stream(path, **kwargs)(request, metadata=metadata, timeout=10)
            async for _ in stream:
                break
            stream.cancel()
        else:
            await channel.unary_unary(path, **kwargs)(request, metadata=metadata, timeout=10)
    except grpc.aio.AioRpcError as error:
        return error
    return None


def violations(error: grpc.aio.AioRpcError) -> list[str]:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    fields: list[str] = []
    for packed in status.details:
        bad = error_details_pb2.BadRequest()
        if packed.Unpack(bad):
            fields += [v.field for v in bad.field_violations]
    return fields


async def test_every_enum_field_of_every_request_refuses_unknown_numbers(
    server: ConveyorServer, admin_key: str
) -> None:
    assert len(CASES) > 30
    failures = []
    async with grpc.aio.insecure_channel(server.grpc_target) as channel:
        for method, path in CASES:
            where = f"{method.full_name} {label(path)}"
            error = await call(channel, method, build(method, path), admin_key)
            if error is None:
                failures.append(f"{where}: accepted")
            elif error.code() != grpc.StatusCode.INVALID_ARGUMENT:
                failures.append(f"{where}: {error.code().name} {error.details()}")
            elif label(path) not in violations(error):
                failures.append(f"{where}: violations {violations(error)}")
    assert not failures, "\n".join(failures)


def test_known_numbers_pass() -> None:
    request = schedule_pb2.CreateScheduleRequest(parent="projects/default")
    request.schedule.spec.kind = enums_pb2.SCHEDULE_KIND_CRON
    request.schedule.overlap_policy = enums_pb2.OVERLAP_POLICY_UNSPECIFIED
    check_enums(request)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (
            "/v1/projects/default/schedules?schedule_id=s1",
            {"spec": {"kind": 42, "expression": "* * * * *"}, "task_template": {"kind": "k"}},
        ),
        (
            "/v1/projects/default/schedules:preview",
            {"schedule": {"spec": {"kind": 42, "expression": "* * * * *"}}},
        ),
    ],
)
async def test_rest_unknown_enum_is_400_naming_the_field(
    server: ConveyorServer, admin_key: str, path: str, body: dict[str, Any]
) -> None:
    async with httpx.AsyncClient(base_url=server.http_base_url, timeout=10) as http:
        response = await http.post(
            path, json=body, headers={"authorization": f"Bearer {admin_key}"}
        )
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/problem+json"
    fields = [e["field"] for e in response.json()["errors"]]
    assert any(f.endswith("spec.kind") for f in fields), fields
