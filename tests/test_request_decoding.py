"""Requests the decoder cannot read are bad input, over gRPC and REST alike.

gRPC's own deserializer used to end such calls with UNKNOWN before the interceptor
ran, and the REST gateway answered a deeply nested body with a 500 (a RecursionError).
"""

from __future__ import annotations

from typing import Any

import grpc
import httpx
import pytest
from google.protobuf import struct_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from conveyor.server.app import ConveyorServer
from conveyor.v1 import task_pb2, task_service_pb2, worker_pb2

PROBLEM = "application/problem+json"
CREATE = "/conveyor.v1.TaskService/CreateTask"


def nest(value: struct_pb2.Value, depth: int) -> None:
    """Makes `value` a list inside a list ... `depth` times (built in place: copying a
    message this deep would go through the decoder, which refuses it)."""
    current = value
    for _ in range(depth):
        current = current.list_value.values.add()
    current.string_value = "x"


def create_bytes(depth: int) -> bytes:
    request = task_service_pb2.CreateTaskRequest(parent="projects/default")
    request.task.kind = "k"
    request.task.queue = "q"
    nest(request.task.input, depth)
    return request.SerializeToString()


def error_info(error: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, error
    for packed in status.details:
        info = error_details_pb2.ErrorInfo()
        if packed.Unpack(info):
            return info
    raise AssertionError(f"no ErrorInfo in {error}")


async def raw_call(server: ConveyorServer, path: str, body: bytes, key: str | None) -> Any:
    metadata = (("authorization", f"Bearer {key}"),) if key else ()
    async with grpc.aio.insecure_channel(server.grpc_target) as channel:
        method = channel.unary_unary(
            path, request_serializer=lambda b: b, response_deserializer=lambda b: b
        )
        return await method(body, metadata=metadata, timeout=10)


@pytest.mark.parametrize("body", [create_bytes(60), b"\xff\xff\xff\xff"])
async def test_grpc_undecodable_request_is_invalid_argument(
    server: ConveyorServer, admin_key: str, body: bytes
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await raw_call(server, CREATE, body, admin_key)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value
    info = error_info(caught.value)
    assert info.reason == "MALFORMED_REQUEST"
    assert info.domain == "conveyor.dev"
    assert info.metadata["message_type"] == "conveyor.v1.CreateTaskRequest"


async def test_grpc_too_deep_names_the_limit(server: ConveyorServer, admin_key: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await raw_call(server, CREATE, create_bytes(60), admin_key)
    assert "deeper than 100 levels" in (caught.value.details() or "")


async def test_grpc_nesting_within_the_limit_still_works(
    server: ConveyorServer, admin_key: str
) -> None:
    answer = await raw_call(server, CREATE, create_bytes(40), admin_key)
    task = task_pb2.Task.FromString(answer)
    assert task.name.startswith("projects/default/tasks/")


async def test_grpc_undecodable_without_a_key_is_unauthenticated(server: ConveyorServer) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await raw_call(server, CREATE, b"\xff\xff\xff\xff", None)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_grpc_undecodable_stream_message_is_invalid_argument(
    server: ConveyorServer, admin_key: str
) -> None:
    metadata = (("authorization", f"Bearer {admin_key}"),)
    async with grpc.aio.insecure_channel(server.grpc_target) as channel:
        connect = channel.stream_stream(
            "/conveyor.v1.WorkerService/Connect",
            request_serializer=lambda b: b,
            response_deserializer=worker_pb2.ConnectResponse.FromString,
        )
        call = connect(iter([b"\xff\xff\xff\xff"]), metadata=metadata, timeout=10)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in call:
                pass
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(caught.value).reason == "MALFORMED_REQUEST"


def deep_command_ack(depth: int) -> bytes:
    request = worker_pb2.ConnectRequest()
    request.command_ack.command = "projects/default/commands/1"
    nest(request.command_ack.result.fields["x"], depth)
    return request.SerializeToString()


@pytest.mark.parametrize("later", [b"\xff\xff\xff\xff", deep_command_ack(60)])
async def test_grpc_undecodable_message_after_the_hello_is_invalid_argument(
    server: ConveyorServer, admin_key: str, later: bytes
) -> None:
    """A bad message later in the stream used to end it quietly, as if the worker had
    half-closed; it must end the call with the decoder's error, as a bad first one does."""
    metadata = (("authorization", f"Bearer {admin_key}"),)
    hello = worker_pb2.ConnectRequest(
        hello=worker_pb2.Hello(parent="projects/default", worker="bad-bytes", queues=["q"])
    )
    async with grpc.aio.insecure_channel(server.grpc_target) as channel:
        connect = channel.stream_stream(
            "/conveyor.v1.WorkerService/Connect",
            request_serializer=lambda b: b,
            response_deserializer=worker_pb2.ConnectResponse.FromString,
        )
        call = connect(metadata=metadata, timeout=10)
        await call.write(hello.SerializeToString())
        welcome = await call.read()
        assert isinstance(welcome, worker_pb2.ConnectResponse)
        assert welcome.WhichOneof("message") == "welcome"
        await call.write(later)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            while await call.read() is not grpc.aio.EOF:
                pass
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value
    info = error_info(caught.value)
    assert info.reason == "MALFORMED_REQUEST"
    assert info.metadata["message_type"] == "conveyor.v1.ConnectRequest"


async def rest_create(server: ConveyorServer, key: str, body: bytes) -> httpx.Response:
    async with httpx.AsyncClient(base_url=server.http_base_url, timeout=10) as http:
        return await http.post(
            "/v1/projects/default/tasks",
            content=body,
            headers={"authorization": f"Bearer {key}", "content-type": "application/json"},
        )


async def test_rest_deeply_nested_body_is_400_naming_the_body(
    server: ConveyorServer, admin_key: str
) -> None:
    body = b'{"kind": "k", "input": ' + b"[" * 10000 + b"]" * 10000 + b"}"
    response = await rest_create(server, admin_key, body)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == PROBLEM
    problem = response.json()
    assert problem["code"] == "invalid_argument"
    assert [e["field"] for e in problem["errors"]] == ["body"]
    assert "nested too deeply" in problem["detail"]


async def test_rest_body_past_the_decoder_depth_is_400_naming_the_field(
    server: ConveyorServer, admin_key: str
) -> None:
    body = b'{"kind": "k", "input": ' + b"[" * 200 + b"]" * 200 + b"}"
    response = await rest_create(server, admin_key, body)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["errors"][0]["field"].startswith("task")
