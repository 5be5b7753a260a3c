"""Every contract method x every role, another project's names, and missing or bad keys.

Requests are built from the descriptors (the auth rule names the resource field,
the http rule gives its shape), so a method added to the contract is covered
without touching this file.
"""

from __future__ import annotations

import re
from typing import Any

import grpc
import pytest
from google.api import annotations_pb2
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

from conveyor.server.rpc.rules import SERVICES
from conveyor.v1 import auth_pb2, enums_pb2

ROLE_ALLOWS = {
    "viewer": {enums_pb2.ROLE_VIEWER},
    "worker": {enums_pb2.ROLE_VIEWER, enums_pb2.ROLE_WORKER},
    "operator": {enums_pb2.ROLE_VIEWER, enums_pb2.ROLE_OPERATOR},
    "admin": {
        enums_pb2.ROLE_VIEWER,
        enums_pb2.ROLE_WORKER,
        enums_pb2.ROLE_OPERATOR,
        enums_pb2.ROLE_ADMIN,
    },
}

METHODS = [m for s in SERVICES for m in s.methods]


def _rule(method: MethodDescriptor) -> auth_pb2.MethodAuth:
    return method.GetOptions().Extensions[auth_pb2.auth]


def _name_for(method: MethodDescriptor, field_path: str, project: str) -> str:
    """A well-formed name for the field, shaped like the method's http path template."""
    rule: Any = method.GetOptions().Extensions[annotations_pb2.http]  # type: ignore[index]
    templates = [
        getattr(rule, kind) for kind in ("get", "post", "patch", "delete") if getattr(rule, kind)
    ]
    templates += [
        getattr(b, kind)
        for b in rule.additional_bindings
        for kind in ("get", "post")
        if getattr(b, kind)
    ]
    for template in templates:
        match = re.search(r"\{" + re.escape(field_path) + r"=([^}]+)\}", template)
        if match:
            pattern = match.group(1).replace("projects/*", f"projects/{project}", 1)
            return pattern.replace("*", "x")
    return f"projects/{project}"


def build_request(method: MethodDescriptor, project: str) -> Message:
    request = GetMessageClass(method.input_type)()
    for path in [p for p in _rule(method).resource_field.split("|") if p][:1]:
        *parents, leaf = path.split(".")
        target: Any = request
        for part in parents:
            target = getattr(target, part)
        setattr(target, leaf, _name_for(method, path, project))
    return request


async def call(
    channel: grpc.aio.Channel, method: MethodDescriptor, request: Message, key: str | None
) -> grpc.StatusCode:
    """The status code of one call (streams: of reading their first message)."""
    path = f"/{method.containing_service.full_name}/{method.name}"
    response_cls = GetMessageClass(method.output_type)
    metadata = (("authorization", f"Bearer {key}"),) if key else ()
    kwargs: dict[str, Any] = {
        "request_serializer": lambda m: m.SerializeToString(),
        "response_deserializer": response_cls.FromString,
    }
    try:
        if method.client_streaming and method.server_streaming:
            stream = channel.stream_stream(path, **kwargs)(
                iter([request]), metadata=metadata, timeout=5
            )
            async for _ in stream:
                break
            stream.cancel()
        elif method.server_streaming:
            server_stream = channel.unary_stream(path, **kwargs)(
                request, metadata=metadata, timeout=5
            )
            async for _ in server_stream:
                break
            server_stream.cancel()
        else:
            await channel.unary_unary(path, **kwargs)(request, metadata=metadata, timeout=5)
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def test_every_method_has_an_auth_rule_and_a_rest_route_or_is_a_stream() -> None:
    for method in METHODS:
        options = method.GetOptions()
        assert options.HasExtension(auth_pb2.auth), method.full_name
        rule: Any = options.Extensions[annotations_pb2.http]  # type: ignore[index]
        has_route = any(getattr(rule, k) for k in ("get", "post", "patch", "delete", "put"))
        assert has_route or (method.client_streaming and method.server_streaming), method.full_name


def test_roles_of_sensitive_methods_follow_design() -> None:
    expected = {
        "TaskService.CreateTask": enums_pb2.ROLE_OPERATOR,
        "TaskService.GetTask": enums_pb2.ROLE_VIEWER,
        "TaskService.BatchDeleteTasks": enums_pb2.ROLE_ADMIN,
        "WorkerService.LeaseTasks": enums_pb2.ROLE_WORKER,
        "WorkerService.Connect": enums_pb2.ROLE_WORKER,
        "CommandService.PurgeQueue": enums_pb2.ROLE_ADMIN,
        "CommandService.RetryTask": enums_pb2.ROLE_OPERATOR,
        "CommandService.RestartWorker": enums_pb2.ROLE_ADMIN,
        "ProjectService.CreateApiKey": enums_pb2.ROLE_ADMIN,
        "EventService.PublishEvent": enums_pb2.ROLE_OPERATOR,
        "ScheduleService.CreateSchedule": enums_pb2.ROLE_OPERATOR,
    }
    by_name = {f"{m.containing_service.name}.{m.name}": _rule(m).role for m in METHODS}
    assert {k: by_name[k] for k in expected} == expected
    create_project = next(m for m in METHODS if m.name == "CreateProject")
    assert _rule(create_project).system_only


async def test_role_matrix(server: Any, keys: dict[str, str]) -> None:
    async with grpc.aio.insecure_channel(server.grpc_target) as channel:
        failures = []
        for method in METHODS:
            rule = _rule(method)
            request = build_request(method, "alpha")
            for role, key in keys.items():
                code = await call(channel, method, request, key)
                allowed = rule.role in ROLE_ALLOWS[role] and not rule.system_only
                if allowed and code in (
                    grpc.StatusCode.PERMISSION_DENIED,
                    grpc.StatusCode.UNAUTHENTICATED,
                ):
                    failures.append(
                        f"{method.full_name} as {role}: {code.name}, expected to be let in"
                    )
                if not allowed and code != grpc.StatusCode.PERMISSION_DENIED:
                    failures.append(
                        f"{method.full_name} as {role}: {code.name}, expected PERMISSION_DENIED"
                    )
        assert not failures, "\n".join(failures)


async def test_other_projects_names_are_denied_whether_or_not_they_exist(
    server: Any, keys: dict[str, str]
) -> None:
    async with grpc.aio.insecure_channel(server.grpc_target) as channel:
        failures = []
        for method in METHODS:
            if not _rule(method).resource_field:
                continue
            for project in ("beta", "no-such-project"):
                code = await call(channel, method, build_request(method, project), keys["admin"])
                if code != grpc.StatusCode.PERMISSION_DENIED:
                    failures.append(f"{method.full_name} on {project}: {code.name}")
        assert not failures, "\n".join(failures)


@pytest.mark.parametrize("key", [None, "cvk_0000000000000000_wrong", "not-a-key"])
async def test_missing_or_bad_keys_are_unauthenticated(server: Any, key: str | None) -> None:
    async with grpc.aio.insecure_channel(server.grpc_target) as channel:
        for method in METHODS:
            code = await call(channel, method, build_request(method, "alpha"), key)
            assert code == grpc.StatusCode.UNAUTHENTICATED, method.full_name


async def test_no_contract_method_answers_unimplemented(server: Any, keys: dict[str, str]) -> None:
    """Every method of the contract is built: none answers UNIMPLEMENTED, even to an admin.

    (test_gateway.py proves what a method not built yet would answer.)
    """
    unbuilt = []
    async with grpc.aio.insecure_channel(server.grpc_target) as channel:
        for method in METHODS:
            request = build_request(method, "alpha")
            if await call(channel, method, request, keys["admin"]) == grpc.StatusCode.UNIMPLEMENTED:
                unbuilt.append(method.full_name)
    assert not unbuilt
