"""Server streams over REST: SSE and NDJSON, resume, keep-alives, errors, disconnects.

WatchEvents is not built yet, so these tests plug a stand-in EventService servicer in
front of the real ones (same interceptor, same auth) and drive it through a gateway
with short timings, served by a real uvicorn so responses really stream.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import grpc
import httpx
import pytest
import pytest_asyncio

from conveyor.server.app import ConveyorServer, ServerHooks
from conveyor.server.context import AppContext
from conveyor.server.errors import ResourceExhausted
from conveyor.server.gateway.app import build_http_app
from conveyor.server.gateway.dispatch import Gateway, GatewayOptions
from conveyor.server.http_server import HttpServer
from conveyor.server.registry import Services
from conveyor.server.rpc import unimplemented
from conveyor.v1 import event_pb2

WATCH = "/v1/projects/default/events:watch"
LAST_ID = 5


class StandInEvents:
    """Events 1..5 after `after`, then silence; `filter.types=overflow` fails after them."""

    def __init__(self) -> None:
        self.cancelled = asyncio.Event()
        self.requests: list[event_pb2.WatchEventsRequest] = []
        self.metadata: list[dict[str, str]] = []

    async def WatchEvents(
        self, request: event_pb2.WatchEventsRequest, context: Any
    ) -> AsyncIterator[event_pb2.Event]:
        self.requests.append(request)
        self.metadata.append({k: v for k, v in context.invocation_metadata() or ()})
        try:
            for event_id in range(request.after + 1, LAST_ID + 1):
                yield event_pb2.Event(
                    id=event_id, type="task.created", subject=f"projects/default/tasks/{event_id}"
                )
            if list(request.filter.types) == ["overflow"]:
                raise ResourceExhausted(
                    "the subscriber fell behind",
                    reason="WATCH_OVERFLOW",
                    metadata={"last_id": str(LAST_ID)},
                    retry_after=timedelta(seconds=2),
                )
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise


@pytest.fixture
def events() -> StandInEvents:
    return StandInEvents()


@pytest.fixture
def server_hooks(events: StandInEvents) -> ServerHooks:
    services = Services()
    service = event_pb2.DESCRIPTOR.services_by_name["EventService"]

    def register(server: grpc.aio.Server, ctx: AppContext) -> list[str]:
        # Added first, so it answers EventService before the registry's handlers.
        server.add_generic_rpc_handlers((unimplemented.generic_handler(service, [events]),))
        return services.register(server, ctx)

    return ServerHooks(register, services.bootstrap, services.interceptors())


@pytest_asyncio.fixture
async def http(server: ConveyorServer, admin_key: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client of a gateway with short timings in front of the server's gRPC port."""
    gateway = Gateway(server.grpc_target, GatewayOptions(keepalive=0.2, stream_start_wait=0.2))

    async def healthy() -> bool:
        return True

    listener = HttpServer(build_http_app(health=healthy, gateway=gateway), "127.0.0.1:0")
    await listener.start()
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{listener.port}",
            headers={"Authorization": f"Bearer {admin_key}"},
            timeout=10,
        ) as client:
            yield client
    finally:
        await listener.stop(1)
        await gateway.close()


async def read_sse(response: httpx.Response, stop: int) -> list[dict[str, str]]:
    """Parsed SSE blocks (comments as {"comment": text}) until `stop` blocks were read."""
    blocks: list[dict[str, str]] = []
    block: dict[str, str] = {}
    async for line in response.aiter_lines():
        if line == "":
            if block:
                blocks.append(block)
                block = {}
                if len(blocks) >= stop:
                    break
            continue
        if line.startswith(":"):
            blocks.append({"comment": line[1:].strip()})
            if len(blocks) >= stop:
                break
            continue
        key, _, value = line.partition(": ")
        block[key] = value
    return blocks


async def test_ndjson_is_the_default(http: httpx.AsyncClient, events: StandInEvents) -> None:
    async with http.stream("GET", WATCH, headers={"X-Request-Id": "watch-1"}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/x-ndjson"
        lines = []
        async for line in response.aiter_lines():
            lines.append(json.loads(line))
            if len(lines) == LAST_ID:
                break
    assert [e["id"] for e in lines] == ["1", "2", "3", "4", "5"]  # int64 as a string
    assert lines[0]["type"] == "task.created"
    assert lines[0]["subject"] == "projects/default/tasks/1"
    # The gateway forwards the caller's key and request id to the gRPC call.
    assert events.metadata[-1]["x-request-id"] == "watch-1"
    assert events.metadata[-1]["authorization"].startswith("Bearer cvk_")


async def test_sse_resumes_from_last_event_id_and_keeps_idle_streams_alive(
    http: httpx.AsyncClient, events: StandInEvents
) -> None:
    headers = {"Accept": "text/event-stream", "Last-Event-ID": "2"}
    async with http.stream("GET", WATCH, params={"after": "1"}, headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-store"
        blocks = await read_sse(response, stop=6)
    assert blocks[0] == {"comment": "connected"}
    assert [(b["id"], b["event"]) for b in blocks[1:4]] == [
        ("3", "task.created"),
        ("4", "task.created"),
        ("5", "task.created"),
    ]
    assert json.loads(blocks[1]["data"])["subject"] == "projects/default/tasks/3"
    assert blocks[4:] == [{"comment": "keep-alive"}, {"comment": "keep-alive"}]
    # The header wins over the query: the stand-in was asked for events after 2.
    assert events.requests[-1].after == 2


async def test_a_silent_stream_still_starts(http: httpx.AsyncClient) -> None:
    headers = {"Accept": "text/event-stream", "Last-Event-ID": str(LAST_ID)}
    async with http.stream("GET", WATCH, headers=headers) as response:
        assert response.status_code == 200
        blocks = await read_sse(response, stop=2)
    assert blocks == [{"comment": "connected"}, {"comment": "keep-alive"}]


async def test_errors_before_the_stream_are_problems(server: ConveyorServer) -> None:
    async with httpx.AsyncClient(base_url=server.http_base_url, timeout=10) as anonymous:
        response = await anonymous.get(WATCH, headers={"Accept": "text/event-stream"})
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "api_key_missing"


async def test_errors_during_the_stream_end_it(http: httpx.AsyncClient) -> None:
    params = {"filter.types": "overflow", "after": "3"}
    headers = {"Accept": "text/event-stream"}
    async with http.stream("GET", WATCH, params=params, headers=headers) as response:
        blocks = await read_sse(response, stop=10)
    assert [b.get("id") for b in blocks[1:3]] == ["4", "5"]
    assert blocks[3]["event"] == "error"
    problem = json.loads(blocks[3]["data"])
    assert (problem["status"], problem["code"]) == (429, "watch_overflow")
    assert problem["retry_after_seconds"] == 2
    assert problem["metadata"] == {"last_id": "5"}
    assert len(blocks) == 4  # the stream ended

    async with http.stream("GET", WATCH, params=params) as response:
        lines = [json.loads(line) async for line in response.aiter_lines()]
    assert [line.get("id") for line in lines[:2]] == ["4", "5"]
    assert lines[2]["error"]["code"] == "watch_overflow"
    assert len(lines) == 3


async def test_the_deadline_header_bounds_a_stream(http: httpx.AsyncClient) -> None:
    headers = {"X-Request-Timeout": "0.5"}
    async with http.stream("GET", WATCH, params={"after": "4"}, headers=headers) as response:
        lines = [json.loads(line) async for line in response.aiter_lines()]
    assert lines[0]["id"] == "5"
    assert (lines[1]["error"]["status"], lines[1]["error"]["code"]) == (504, "deadline_exceeded")


async def test_a_client_that_leaves_cancels_the_call(
    http: httpx.AsyncClient, events: StandInEvents
) -> None:
    async with http.stream("GET", WATCH, headers={"Accept": "text/event-stream"}) as response:
        await read_sse(response, stop=3)
    # A bound, not a speed: the disconnect travels through uvicorn, the gateway and a
    # gRPC cancel, which took over 5 s once at load 10.
    await asyncio.wait_for(events.cancelled.wait(), timeout=60)
