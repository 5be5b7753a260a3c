"""CancelTask's request_id (AIP-155): a retried cancel returns the task instead of
FAILED_PRECONDITION (the first one already cancelled it) and records no second
command; the same id with a different request is ALREADY_EXISTS (REQUEST_ID_REUSED)."""

from __future__ import annotations

from typing import Any

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from conveyor.server.app import ConveyorServer
from conveyor.v1 import (
    command_pb2,
    command_pb2_grpc,
    enums_pb2,
    task_pb2,
    task_service_pb2,
    task_service_pb2_grpc,
)

PARENT = "projects/alpha"


async def test_a_cancel_with_the_same_request_id_answers_the_task(
    server: ConveyorServer, keys: dict[str, str]
) -> None:
    md = (("authorization", f"Bearer {keys['operator']}"),)
    async with grpc.aio.insecure_channel(server.grpc_target) as channel:
        stub = task_service_pb2_grpc.TaskServiceStub(channel)

        async def create() -> str:
            task = await stub.CreateTask(
                task_service_pb2.CreateTaskRequest(parent=PARENT, task=task_pb2.Task(kind="k")),
                metadata=md,
            )
            return task.name

        def cancel(name: str, request_id: str = "", reason: str = "stop") -> Any:
            request = task_service_pb2.CancelTaskRequest(
                name=name, reason=reason, request_id=request_id
            )
            return stub.CancelTask(request, metadata=md)

        name = await create()
        first = await cancel(name, "c-1")
        assert first.state == enums_pb2.TASK_STATE_CANCELLED
        again = await cancel(name, "c-1")
        assert again.name == name and again.state == enums_pb2.TASK_STATE_CANCELLED
        assert again.state_reason == first.state_reason == "stop"

        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await cancel(name, "c-1", reason="other")
        assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
        status = rpc_status.from_call(caught.value)  # type: ignore[arg-type]
        assert status is not None
        info = error_details_pb2.ErrorInfo()
        assert any(packed.Unpack(info) for packed in status.details)
        assert info.reason == "REQUEST_ID_REUSED" and info.metadata["resource"] == name
        # Another task with the same id is a different request too.
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await cancel(await create(), "c-1")
        assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS

        # Without a request_id a second cancel is refused as before.
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await cancel(name)
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await cancel(name, "x" * 129)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT

        # One cancel, one audit record: the replay recorded nothing.
        commands = await command_pb2_grpc.CommandServiceStub(channel).ListCommands(
            command_pb2.ListCommandsRequest(
                parent=PARENT,
                filter=command_pb2.CommandFilter(verbs=[enums_pb2.COMMAND_VERB_CANCEL_TASK]),
            ),
            metadata=md,
        )
        assert [c.target for c in commands.commands] == [name]

    async with httpx.AsyncClient(
        base_url=server.http_base_url,
        headers={"Authorization": f"Bearer {keys['operator']}"},
        timeout=10,
    ) as http:
        created = await http.post(f"/v1/{PARENT}/tasks", json={"kind": "k"})
        url = f"/v1/{created.json()['name']}:cancel"
        answers = [await http.post(url, json={"request_id": "rest-1"}) for _ in range(2)]
        assert [a.status_code for a in answers] == [200, 200], answers[1].text
        assert answers[0].json()["state"] == answers[1].json()["state"] == "TASK_STATE_CANCELLED"
