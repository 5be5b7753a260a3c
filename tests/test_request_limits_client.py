"""The Python client retries a call its key's request limits refused (REQUEST_LIMITED with
RetryInfo), idempotent or not, after the delay the server named; a delay past
MAX_RETRY_AFTER is raised at once. Watches and the worker SDK reopen no sooner.

A refill of 0.25 calls per second gives the test 4 s between a call and the next for
the second to be refused; the retry then waits what the server said (under 5 s).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import grpc
import pytest

from conveyor.client import AsyncClient, Client, ConveyorError, ResourceExhaustedError, _calls
from conveyor.client._backoff import reconnect_delay
from conveyor.client._events import _Resume
from conveyor.server.app import ConveyorServer
from conveyor.v1 import enums_pb2, event_pb2, project_pb2

RL = project_pb2.RateLimits
RQ = project_pb2.RequestLimit


async def limited_key(
    server: ConveyorServer, admin_key: str, limits: project_pb2.RateLimits
) -> str:
    async with AsyncClient(server.grpc_target, api_key=admin_key) as admin:
        await admin.create_project("acme")
        created = await admin.create_api_key(
            "projects/acme", enums_pb2.ROLE_OPERATOR, rate_limits=limits
        )
    return created.secret


async def test_a_refused_call_is_retried_after_the_servers_delay_idempotent_or_not(
    server: ConveyorServer, admin_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = await limited_key(
        server, admin_key, RL(read=RQ(requests_per_second=0.25), write=RQ(requests_per_second=0.25))
    )
    waited: list[float] = []

    async def recording_sleep(seconds: float) -> None:
        waited.append(seconds)
        await asyncio.sleep(seconds)

    monkeypatch.setattr(_calls, "async_sleep", recording_sleep)
    async with AsyncClient(server.grpc_target, api_key=secret) as client:
        await client.get_project("projects/acme")
        await client.get_project("projects/acme")  # a read: idempotent
        assert len(waited) == 1 and 0 < waited[0] <= 4 * 1.2
        await client.pause_queue("projects/acme/queues/q")
        resumed = await client.resume_queue("projects/acme/queues/q")  # not idempotent
    assert not resumed.paused
    assert len(waited) == 2


async def test_a_delay_past_the_clients_patience_is_raised_at_once(
    server: ConveyorServer, admin_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = await limited_key(server, admin_key, RL(read=RQ(requests_per_second=0.001)))
    waited: list[float] = []
    monkeypatch.setattr(_calls, "sleep", waited.append)

    def calls() -> ResourceExhaustedError:
        with Client(server.grpc_target, api_key=secret) as client:
            client.get_project("projects/acme")
            with pytest.raises(ResourceExhaustedError) as caught:
                client.get_project("projects/acme")
        return caught.value

    # The sync client on its own thread: the server runs on this event loop.
    refused = await asyncio.to_thread(calls)
    assert refused.reason == "REQUEST_LIMITED"
    assert refused.retry_after is not None and refused.retry_after > timedelta(seconds=100)
    assert waited == []


def rate_limited(seconds: float) -> ConveyorError:
    """The error a refused call raises, as from_rpc_error builds it from the status."""
    from google.protobuf import any_pb2, duration_pb2
    from google.rpc import error_details_pb2, status_pb2

    details = []
    for message in (
        error_details_pb2.ErrorInfo(reason="REQUEST_LIMITED", domain="conveyor.dev"),
        error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=int(seconds))),
    ):
        packed = any_pb2.Any()
        packed.Pack(message)
        details.append(packed)
    status = status_pb2.Status(code=8, message="rate limited", details=details)
    return ResourceExhaustedError(grpc.StatusCode.RESOURCE_EXHAUSTED, "rate limited", status)


def test_the_worker_sdk_reconnects_no_sooner_than_retry_info_says() -> None:
    assert reconnect_delay(1, rate_limited(120)) >= 120
    assert reconnect_delay(1, None) <= 5


def test_a_watch_reopens_no_sooner_than_retry_info_says() -> None:
    resume = _Resume("projects/acme", event_pb2.EventFilter(), 0, False, 5.0)
    assert resume.failed(rate_limited(120)) >= 120
