"""One set of message size limits (conveyor.client._limits) that fits the contract:
what the server receives and sends, what clients and the gateway accept, a byte cap
on batches, 413 for a REST body too large, pages cut by size, and ListTasks/ExportTasks
`view` (AIP-157)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

from conveyor.client import AsyncClient, InvalidArgumentError, _limits
from conveyor.client import _client as client_module
from conveyor.server import grpc_server
from conveyor.server.app import ConveyorServer
from conveyor.server.gateway import upstream
from conveyor.server.gateway.dispatch import GatewayOptions
from conveyor.v1 import enums_pb2, task_pb2, task_service_pb2

PARENT = "projects/default"


def test_the_limits_agree() -> None:
    server = dict(grpc_server._OPTIONS)
    for options in (dict(client_module.CHANNEL_OPTIONS), dict(upstream._OPTIONS)):
        assert options["grpc.max_receive_message_length"] >= server["grpc.max_send_message_length"]
        assert options["grpc.max_send_message_length"] <= server["grpc.max_receive_message_length"]
    assert server["grpc.max_receive_message_length"] == _limits.MAX_REQUEST_BYTES
    assert server["grpc.max_send_message_length"] == _limits.MAX_RESPONSE_BYTES
    # A full batch is answered with its tasks echoed: it must fit what the server sends.
    assert 2 * _limits.MAX_BATCH_BYTES < _limits.MAX_RESPONSE_BYTES
    assert _limits.MAX_PAGE_BYTES < _limits.MAX_RESPONSE_BYTES
    assert GatewayOptions().max_body_bytes == _limits.MAX_REST_BODY_BYTES


@pytest_asyncio.fixture
async def http(server: ConveyorServer, admin_key: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=server.http_base_url,
        headers={"authorization": f"Bearer {admin_key}"},
        timeout=60,
    ) as client:
        yield client


@pytest_asyncio.fixture
async def client(server: ConveyorServer, admin_key: str) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(server.grpc_target, api_key=admin_key) as made:
        yield made


async def test_a_valid_5_mb_batch_over_rest_is_accepted(http: httpx.AsyncClient) -> None:
    body = {
        "requests": [
            {"task": {"kind": "k", "queue": "big", "input": {"blob": "x" * 5400}}}
            for _ in range(1000)
        ]
    }
    raw = json.dumps(body).encode()
    assert len(raw) > 5_400_000
    response = await http.post(
        f"/v1/{PARENT}/tasks:batchCreate",
        content=raw,
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 200, response.text[:500]
    assert len(response.json()["results"]) == 1000


async def test_a_rest_body_over_the_limit_is_413(http: httpx.AsyncClient) -> None:
    raw = b'{"kind": "k", "input": "' + b"x" * (_limits.MAX_REST_BODY_BYTES + 10) + b'"}'
    response = await http.post(
        f"/v1/{PARENT}/tasks", content=raw, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413, response.text[:500]
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "body_too_large"


def big_task(index: int, size: int = 1_000_000) -> task_service_pb2.CreateTaskRequest:
    request = task_service_pb2.CreateTaskRequest(task=task_pb2.Task(kind="k", queue="large"))
    request.task.input.string_value = f"{index:04d}" + "y" * (size - 10)
    return request


async def test_a_batch_over_its_byte_cap_is_invalid_argument(client: AsyncClient) -> None:
    requests = [big_task(i) for i in range(18)]  # 18 MB: under the receive limit
    with pytest.raises(InvalidArgumentError) as caught:
        await client.tasks.BatchCreateTasks(
            task_service_pb2.BatchCreateTasksRequest(parent=PARENT, requests=requests)
        )
    assert [field for field, _ in caught.value.field_violations] == ["requests"]


async def list_all(client: AsyncClient, view: Any) -> list[task_service_pb2.ListTasksResponse]:
    pages = []
    token = ""
    while True:
        page = await client.tasks.ListTasks(
            task_service_pb2.ListTasksRequest(
                parent=PARENT, page_size=100, page_token=token, view=view
            )
        )
        pages.append(page)
        token = page.next_page_token
        if not token:
            return pages


async def test_pages_stop_before_the_send_limit_and_basic_view_stays_small(
    client: AsyncClient,
) -> None:
    total = 70  # 70 MB of inputs: more than any one message may carry
    for start in range(0, total, 14):
        await client.tasks.BatchCreateTasks(
            task_service_pb2.BatchCreateTasksRequest(
                parent=PARENT, requests=[big_task(i) for i in range(start, start + 14)]
            )
        )
    full = await list_all(client, enums_pb2.TASK_VIEW_FULL)
    assert len(full) >= 2
    assert all(page.ByteSize() <= _limits.MAX_RESPONSE_BYTES for page in full)
    inputs = [t.input.string_value[:4] for page in full for t in page.tasks]
    assert inputs == [f"{i:04d}" for i in range(total)]  # every task once, in order

    (basic,) = await list_all(client, enums_pb2.TASK_VIEW_BASIC)
    assert len(basic.tasks) == total
    assert not any(t.HasField("input") or t.HasField("result") for t in basic.tasks)
    assert all(t.name and t.kind == "k" for t in basic.tasks)
    default = await list_all(client, enums_pb2.TASK_VIEW_UNSPECIFIED)
    assert [t.name for p in default for t in p.tasks] == [t.name for p in full for t in p.tasks]


async def test_export_view_basic_leaves_out_input_and_result(http: httpx.AsyncClient) -> None:
    created = await http.post(f"/v1/{PARENT}/tasks", json={"kind": "k", "input": {"n": 1}})
    assert created.status_code == 200, created.text
    url = f"/v1/{PARENT}/tasks:export"
    full = await http.get(
        url, params={"format": "EXPORT_FORMAT_NDJSON", "fields": ["name", "input"]}
    )
    assert json.loads(full.text.splitlines()[0])["input"] == {"n": 1}
    basic = await http.get(
        url, params={"format": "EXPORT_FORMAT_NDJSON", "view": "TASK_VIEW_BASIC", "fields": "name"}
    )
    assert basic.status_code == 200, basic.text
    assert "input" not in json.loads(basic.text.splitlines()[0])
    refused = await http.get(
        url,
        params={"format": "EXPORT_FORMAT_NDJSON", "view": "TASK_VIEW_BASIC", "fields": "input"},
    )
    assert refused.status_code == 400, refused.text
    assert refused.json()["errors"][0]["field"] == "fields"
    listed = await http.get(f"/v1/{PARENT}/tasks", params={"view": "BASIC"})
    assert listed.status_code == 200
    assert "input" not in listed.json()["tasks"][0]
