"""Request limits enforced by real servers: RESOURCE_EXHAUSTED with RetryInfo over gRPC,
429 with Retry-After over REST, classes independent, key over project, two replicas
sharing one budget.

Budgets here refill at 0.001 calls per second, so a bucket that ran dry stays dry for
the whole test, however slow the machine: no assertion depends on timing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import httpx
import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from conveyor.client import AsyncClient
from conveyor.client.errors import ConveyorError, from_rpc_error
from conveyor.server.app import ConveyorServer
from conveyor.server.loops.replicas import ReplicaRegistry
from conveyor.server.settings import Settings
from conveyor.v1 import (
    enums_pb2,
    event_pb2,
    event_pb2_grpc,
    project_pb2,
    project_pb2_grpc,
    task_pb2,
    task_service_pb2,
    worker_pb2,
    worker_pb2_grpc,
)

RL = project_pb2.RateLimits
RQ = project_pb2.RequestLimit
DRY = 0.001
"""A rate that refills nothing within a test."""


def auth(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)


async def reads(target: str, key: str, count: int) -> list[ConveyorError | None]:
    """`count` GetProject calls with `key` (a plain channel: no client retries); each
    one's error, or None."""
    out: list[ConveyorError | None] = []
    async with grpc.aio.insecure_channel(target) as channel:
        stub = project_pb2_grpc.ProjectServiceStub(channel)
        for _ in range(count):
            try:
                await stub.GetProject(
                    project_pb2.GetProjectRequest(name="projects/acme"), metadata=auth(key)
                )
                out.append(None)
            except grpc.aio.AioRpcError as error:
                out.append(from_rpc_error(error))
    return out


def admitted(results: list[ConveyorError | None]) -> int:
    """How many calls went through before the first refusal; all after it were refused."""
    first = next((i for i, r in enumerate(results) if r is not None), len(results))
    assert all(r is not None and r.reason == "REQUEST_LIMITED" for r in results[first:])
    return first


@pytest.fixture
def server_settings(server_settings: Settings) -> Settings:
    """At info, so the test of what a flood logs sees the lines it would write."""
    return server_settings.replace(log_level="info")


@pytest_asyncio.fixture
async def admin(server: ConveyorServer, admin_key: str) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(server.grpc_target, api_key=admin_key) as client:
        await client.create_project("acme")
        yield client


async def key(
    admin: AsyncClient, limits: project_pb2.RateLimits | None = None, role: int = 1
) -> str:
    created = await admin.create_api_key(
        "projects/acme",
        role,  # type: ignore[arg-type]
        rate_limits=limits,
    )
    return created.secret


async def test_over_the_limit_grpc_gets_retry_info_and_rest_gets_429(
    server: ConveyorServer, admin: AsyncClient
) -> None:
    secret = await key(admin, RL(read=RQ(requests_per_second=DRY, burst=2)))
    results = await reads(server.grpc_target, secret, 3)
    assert admitted(results) == 2
    refused = results[2]
    assert refused is not None
    assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert refused.reason == "REQUEST_LIMITED"
    assert refused.metadata["method_class"] == "read"
    assert refused.retry_after is not None and refused.retry_after.total_seconds() > 100
    async with httpx.AsyncClient(base_url=server.http_base_url) as http:
        response = await http.get(
            "/v1/projects/acme", headers={"authorization": f"Bearer {secret}"}
        )
    assert response.status_code == 429
    assert response.headers["content-type"].startswith("application/problem+json")
    assert int(response.headers["retry-after"]) > 100
    body = response.json()
    assert body["code"] == "request_limited"
    assert body["retry_after_seconds"] > 100


async def test_a_refused_unary_call_sends_its_request_id_with_the_status_only(
    server: ConveyorServer, admin: AsyncClient
) -> None:
    """The bucket is checked before any metadata goes out: a refusal is one trailers-only
    answer, and each refusal carries its own request id beside the shared details."""
    secret = await key(admin, RL(read=RQ(requests_per_second=DRY, burst=1)))
    request = project_pb2.GetProjectRequest(name="projects/acme")
    async with grpc.aio.insecure_channel(server.grpc_target) as channel:
        stub = project_pb2_grpc.ProjectServiceStub(channel)
        first = stub.GetProject(request, metadata=(*auth(secret), ("x-request-id", "ok-1")))
        await first
        assert dict(await first.initial_metadata())["x-request-id"] == "ok-1"
        refused = []
        for request_id in ("no-1", "no-2"):
            call = stub.GetProject(request, metadata=(*auth(secret), ("x-request-id", request_id)))
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await call
            assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "x-request-id" not in dict(await call.initial_metadata())
            trailers = dict(await call.trailing_metadata())
            assert trailers["x-request-id"] == request_id
            refused.append(from_rpc_error(raised.value))
    for error in refused:
        assert error.reason == "REQUEST_LIMITED"
        assert error.retry_after is not None and error.retry_after.total_seconds() > 100


async def test_a_read_flood_does_not_block_the_same_keys_worker_calls(
    server: ConveyorServer, admin: AsyncClient
) -> None:
    secret = await key(
        admin, RL(read=RQ(requests_per_second=DRY, burst=1)), role=enums_pb2.ROLE_WORKER
    )
    task = await admin.tasks.CreateTask(
        task_service_pb2.CreateTaskRequest(
            parent="projects/acme", task=task_pb2.Task(queue="q", kind="k")
        )
    )
    assert admitted(await reads(server.grpc_target, secret, 5)) == 1
    async with grpc.aio.insecure_channel(server.grpc_target) as channel:
        workers = worker_pb2_grpc.WorkerServiceStub(channel)
        leased = await workers.LeaseTasks(
            worker_pb2.LeaseTasksRequest(
                parent="projects/acme", worker="w", queues=["q"], max_tasks=1
            ),
            metadata=auth(secret),
        )
        assert [lease.task.name for lease in leased.leases] == [task.name]
        await workers.CompleteTask(
            worker_pb2.CompleteTaskRequest(name=task.name, lease_id=leased.leases[0].lease_id),
            metadata=auth(secret),
        )


async def test_a_key_override_beats_the_project_default(
    server: ConveyorServer, admin: AsyncClient
) -> None:
    await admin.projects.UpdateProject(
        project_pb2.UpdateProjectRequest(
            project=project_pb2.Project(
                name="projects/acme", rate_limits=RL(read=RQ(requests_per_second=DRY, burst=1))
            )
        )
    )
    plain = await key(admin)
    lifted = await key(admin, RL(read=RQ()))
    roomier = await key(admin, RL(read=RQ(requests_per_second=DRY, burst=3)))
    target = server.grpc_target
    assert admitted(await reads(target, plain, 3)) == 1
    assert admitted(await reads(target, lifted, 5)) == 5
    assert admitted(await reads(target, roomier, 5)) == 3


async def test_a_project_default_does_not_bind_system_keys(
    server: ConveyorServer, admin: AsyncClient, admin_key: str
) -> None:
    await admin.projects.UpdateProject(
        project_pb2.UpdateProjectRequest(
            project=project_pb2.Project(
                name="projects/default",
                rate_limits=RL(read=RQ(requests_per_second=DRY, burst=1)),
            )
        )
    )
    assert admitted(await reads(server.grpc_target, admin_key, 3)) == 3


async def test_changed_limits_apply_at_once_on_the_replica_that_changed_them(
    server: ConveyorServer, admin: AsyncClient
) -> None:
    created = await admin.create_api_key(
        "projects/acme",
        enums_pb2.ROLE_VIEWER,
        rate_limits=RL(read=RQ(requests_per_second=DRY, burst=1)),
    )
    assert admitted(await reads(server.grpc_target, created.secret, 2)) == 1
    await admin.projects.UpdateApiKey(
        project_pb2.UpdateApiKeyRequest(
            api_key=project_pb2.ApiKey(name=created.name, rate_limits=RL(read=RQ()))
        )
    )
    assert admitted(await reads(server.grpc_target, created.secret, 3)) == 3
    # A project default reaches its keys at once too (those without their own).
    plain = await key(admin)
    assert admitted(await reads(server.grpc_target, plain, 2)) == 2
    await admin.projects.UpdateProject(
        project_pb2.UpdateProjectRequest(
            project=project_pb2.Project(
                name="projects/acme", rate_limits=RL(read=RQ(requests_per_second=DRY, burst=1))
            )
        )
    )
    assert admitted(await reads(server.grpc_target, plain, 2)) == 1


def registry(server: ConveyorServer) -> ReplicaRegistry:
    return next(loop for loop in server.context.loops if isinstance(loop, ReplicaRegistry))


async def test_two_replicas_split_each_budget(
    server: ConveyorServer, replica: ConveyorServer, admin: AsyncClient
) -> None:
    registries = [registry(server), registry(replica)]
    for each in registries:
        await each.wait_for_pass()
    assert [each.live for each in registries] == [2, 2]
    secret = await key(admin, RL(read=RQ(requests_per_second=DRY, burst=4)))
    assert admitted(await reads(server.grpc_target, secret, 4)) == 2
    assert admitted(await reads(replica.grpc_target, secret, 4)) == 2
    # A replica that stops leaves the registry: the other takes the whole budget again.
    await replica.stop()
    await registries[0].wait_for_pass()
    assert registries[0].live == 1


async def refused_so_far(server: ConveyorServer, method_class: str) -> float:
    """conveyor_requests_rate_limited_total{method_class} on the server's /metrics."""
    async with httpx.AsyncClient(base_url=server.http_base_url, timeout=5) as http:
        text = (await http.get("/metrics")).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if (
                sample.name == "conveyor_requests_rate_limited_total"
                and sample.labels.get("method_class") == method_class
            ):
                return float(sample.value)
    return 0.0


async def test_a_flood_logs_one_line_per_episode_and_counts_each_refusal(
    server: ConveyorServer, admin: AsyncClient
) -> None:
    secret = await key(admin, RL(read=RQ(requests_per_second=DRY, burst=1)))
    before = await refused_so_far(server, "read")
    with capture_logs() as logs:
        assert admitted(await reads(server.grpc_target, secret, 6)) == 1
    reached = [line for line in logs if line["event"] == "rate limit reached"]
    assert len(reached) == 1 and reached[0]["method_class"] == "read"
    assert [line for line in logs if line.get("code") == "RESOURCE_EXHAUSTED"] == []
    assert await refused_so_far(server, "read") == before + 5


async def test_a_stream_counts_once_when_it_opens(
    server: ConveyorServer, admin: AsyncClient
) -> None:
    secret = await key(admin, RL(stream=RQ(requests_per_second=DRY, burst=1)))
    request = event_pb2.WatchEventsRequest(parent="projects/acme")
    async with grpc.aio.insecure_channel(server.grpc_target) as channel:
        events = event_pb2_grpc.EventServiceStub(channel)
        first = events.WatchEvents(request, metadata=auth(secret))
        # Headers come once the call is admitted (interceptor.py).
        assert "x-request-id" in dict(await first.initial_metadata())
        second = events.WatchEvents(request, metadata=auth(secret))
        assert await second.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        async with httpx.AsyncClient(base_url=server.http_base_url) as http:
            sse = await http.get(
                "/v1/projects/acme/events:watch", headers={"authorization": f"Bearer {secret}"}
            )
        assert sse.status_code == 429 and int(sse.headers["retry-after"]) > 100
        first.cancel()
    # Reads are another class: the stream budget being spent does not touch them.
    assert admitted(await reads(server.grpc_target, secret, 2)) == 2


async def test_rest_patches_a_keys_limits_by_the_keys_of_its_body(
    server: ConveyorServer, admin: AsyncClient, admin_key: str
) -> None:
    created = await admin.create_api_key(
        "projects/acme",
        enums_pb2.ROLE_VIEWER,
        rate_limits=RL(read=RQ(requests_per_second=5, burst=9), bulk=RQ(requests_per_second=1)),
    )
    async with httpx.AsyncClient(
        base_url=server.http_base_url, headers={"authorization": f"Bearer {admin_key}"}
    ) as http:
        # A key of the body changes that one field.
        patched = await http.patch(
            f"/v1/{created.name}", json={"rate_limits": {"read": {"requests_per_second": 50}}}
        )
        assert patched.status_code == 200, patched.text
        assert patched.json()["rate_limits"]["read"] == {"requests_per_second": 50, "burst": 9}
        # A class named by update_mask and absent from the body is cleared: it follows
        # the project's limit again.
        cleared = await http.patch(
            f"/v1/{created.name}", params={"update_mask": "rate_limits.bulk"}, json={}
        )
        assert cleared.status_code == 200, cleared.text
        assert cleared.json()["rate_limits"] == {"read": {"requests_per_second": 50, "burst": 9}}
        refused = await http.patch(
            f"/v1/{created.name}", json={"rate_limits": {"write": {"burst": 5}}}
        )
    assert refused.status_code == 400
    assert [e["field"] for e in refused.json()["errors"]] == ["api_key.rate_limits.write.burst"]
