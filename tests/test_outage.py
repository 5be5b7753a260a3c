"""A PostgreSQL outage: UNAVAILABLE with RetryInfo (503 + Retry-After over REST), never
INTERNAL; health NOT_SERVING while the pool cannot reach the database and SERVING again
after; the Python client retries UNAVAILABLE, waiting what RetryInfo asks.

These tests stop and start a PostgreSQL of their own (the session's is shared by every
other test), in a temporary directory outside pytest's basetemp for the reason given in
conftest.postgres_url.
"""

from __future__ import annotations

import asyncio
import collections
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import grpc
import httpx
import psycopg
import pytest
import pytest_asyncio
from google.rpc import code_pb2, error_details_pb2
from grpc_health.v1 import health_pb2
from grpc_status import rpc_status
from psycopg import sql
from psycopg.conninfo import make_conninfo

from conveyor.client import AsyncClient, Client, UnavailableError, _calls
from conveyor.server.app import ConveyorServer
from conveyor.server.embedded import EmbeddedPostgres
from conveyor.server.loops.periodic import PeriodicLoop
from conveyor.server.services import default_hooks
from conveyor.server.settings import Settings
from conveyor.server.store import outage
from conveyor.server.store.db import open_pool
from conveyor.server.streams.listener import EventListener
from conveyor.v1 import task_service_pb2, task_service_pb2_grpc

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class OwnPostgres:
    """An embedded PostgreSQL that only this module uses, so it may stop it."""

    def __init__(self, root: Path) -> None:
        self._embedded = EmbeddedPostgres(root)
        self.url = self._embedded.start()

    def stop(self) -> None:
        self._embedded.stop()

    def start(self) -> None:
        assert self._embedded.start() == self.url


@pytest.fixture(scope="module")
def own_postgres() -> Iterator[OwnPostgres]:
    root = Path(tempfile.mkdtemp(prefix="conveyor-test-outage-"))
    try:
        own = OwnPostgres(root)
        try:
            yield own
        finally:
            own.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest_asyncio.fixture
async def outage_server(own_postgres: OwnPostgres, tmp_path: Path) -> AsyncIterator[ConveyorServer]:
    """A server on a database of its own in `own_postgres`."""
    name = f"outage_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(own_postgres.url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    settings = Settings(
        data_dir=tmp_path / "data",
        grpc_address="127.0.0.1:0",
        http_address="127.0.0.1:0",
        database_url=make_conninfo(own_postgres.url, dbname=name),
        log_level="error",
        shutdown_grace=2.0,
    )
    server = ConveyorServer(settings, default_hooks())
    await server.start()
    try:
        yield server
    finally:
        own_postgres.start()  # a failed test may have left it stopped
        await server.stop()


async def wait_health(server: ConveyorServer, status: int) -> None:
    """Returns once gRPC health (the whole server) reports `status`."""
    async with grpc.aio.insecure_channel(server.grpc_target) as channel:
        # A raw method handle: the health stub's typeshed stubs are untyped.
        watch = channel.unary_stream(
            "/grpc.health.v1.Health/Watch",
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )(health_pb2.HealthCheckRequest())
        async with asyncio.timeout(60):
            async for answer in watch:
                if answer.status == status:
                    watch.cancel()
                    return


def assert_unavailable(error: grpc.aio.AioRpcError) -> None:
    assert error.code() is grpc.StatusCode.UNAVAILABLE, error
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None and status.code == code_pb2.UNAVAILABLE
    infos = [d for d in status.details if d.Is(error_details_pb2.RetryInfo.DESCRIPTOR)]
    assert len(infos) == 1, status.details
    retry = error_details_pb2.RetryInfo()
    infos[0].Unpack(retry)
    assert retry.retry_delay.ToTimedelta() == outage.RETRY_AFTER


async def test_an_outage_is_unavailable_and_not_serving_until_the_database_returns(
    outage_server: ConveyorServer, own_postgres: OwnPostgres
) -> None:
    key = (outage_server.data_dir / "admin.key").read_text().strip()
    auth = (("authorization", f"Bearer {key}"),)
    async with AsyncClient(outage_server.grpc_target, api_key=key) as client:
        task = await client.create_task("outage.probe", {}, queue="default")
    request = task_service_pb2.GetTaskRequest(name=task.name)
    http = httpx.AsyncClient(base_url=outage_server.http_base_url, headers=dict(auth), timeout=60)
    async with grpc.aio.insecure_channel(outage_server.grpc_target) as channel, http:
        stub = task_service_pb2_grpc.TaskServiceStub(channel)
        assert (await stub.GetTask(request, metadata=auth)).name == task.name
        assert (await http.get("/healthz")).status_code == 200

        await asyncio.to_thread(own_postgres.stop)
        # The first call meets the lost connections (or waits for the pool): UNAVAILABLE.
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.GetTask(request, metadata=auth, timeout=60)
        assert_unavailable(raised.value)

        await wait_health(outage_server, NOT_SERVING)
        healthz = await http.get("/healthz")
        assert healthz.status_code == 503
        assert healthz.json() == {"status": "NOT_SERVING"}
        # Refused at once while the database is known to be down.
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.GetTask(request, metadata=auth, timeout=60)
        assert_unavailable(raised.value)
        rest = await http.get(f"/v1/{task.name}")
        assert rest.status_code == 503, rest.text
        assert rest.headers["content-type"] == "application/problem+json"
        assert rest.headers["retry-after"] == "1"
        assert rest.json()["retry_after_seconds"] == 1

        await asyncio.to_thread(own_postgres.start)
        await wait_health(outage_server, SERVING)
        assert (await http.get("/healthz")).status_code == 200
        assert (await stub.GetTask(request, metadata=auth)).name == task.name
        assert (await http.get(f"/v1/{task.name}")).status_code == 200


async def test_the_client_retries_unavailable_after_the_retry_info_delay(
    outage_server: ConveyorServer, own_postgres: OwnPostgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = (outage_server.data_dir / "admin.key").read_text().strip()
    async with AsyncClient(outage_server.grpc_target, api_key=key) as client:
        task = await client.create_task("outage.retry", {}, queue="default")
        await asyncio.to_thread(own_postgres.stop)
        await wait_health(outage_server, NOT_SERVING)

        waits: list[float] = []

        async def restart_then_continue(seconds: float) -> None:
            # The client is waiting before its retry: bring the database back meanwhile.
            waits.append(seconds)
            if len(waits) == 1:
                await asyncio.to_thread(own_postgres.start)
                await wait_health(outage_server, SERVING)

        monkeypatch.setattr(_calls, "async_sleep", restart_then_continue)
        assert (await client.get_task(task.name)).name == task.name
        assert waits == [outage.RETRY_AFTER.total_seconds()]

        # The sync client, in a thread (the server runs on this event loop).
        await asyncio.to_thread(own_postgres.stop)
        await wait_health(outage_server, NOT_SERVING)
        loop = asyncio.get_running_loop()
        sync_waits: list[float] = []

        def restart_from_thread(seconds: float) -> None:
            sync_waits.append(seconds)
            if len(sync_waits) == 1:
                own_postgres.start()
                asyncio.run_coroutine_threadsafe(wait_health(outage_server, SERVING), loop).result()

        monkeypatch.setattr(_calls, "sleep", restart_from_thread)

        def get_sync() -> str:
            with Client(outage_server.grpc_target, api_key=key) as sync_client:
                return sync_client.get_task(task.name).name

        assert await asyncio.to_thread(get_sync) == task.name
        assert sync_waits == [outage.RETRY_AFTER.total_seconds()]


def test_retry_delay_is_the_retry_info_delay_when_the_server_sent_one() -> None:
    error = UnavailableError(grpc.StatusCode.UNAVAILABLE, "down")
    error.retry_after = timedelta(seconds=3)
    assert _calls.retry_delay(1, error) == 3.0
    assert _calls.retry_delay(3, error) == 3.0
    error.retry_after = None
    assert 0 < _calls.retry_delay(1, error) <= 1.0


async def test_loops_and_the_listener_reconnect_with_a_growing_backoff(
    own_postgres: OwnPostgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    """During an outage a loop's pass and the LISTEN connection are retried with waits
    that double from their initial interval (tenacity), not every tick; both come back
    when the database does, and the listener keeps polling its subscribers meanwhile."""
    initial = 0.05
    waits: dict[str, list[float]] = collections.defaultdict(list)
    grown = asyncio.Event()

    async def record(seconds: float, *, who: str) -> None:
        waits[who].append(seconds)
        if all(max(waits[w], default=0) >= 16 * initial for w in ("pinger", "event-listener")):
            grown.set()
        await asyncio.sleep(0.01)

    monkeypatch.setattr(outage, "sleep", record)
    pool = await open_pool(own_postgres.url, min_size=1, max_size=2)

    class Pinger(PeriodicLoop):
        name = "pinger"

        async def run_once(self) -> None:
            async with pool.connection(timeout=1) as conn:
                await conn.execute("SELECT 1")

    polled = 0

    def subscriber(_project: str | None) -> None:
        nonlocal polled
        polled += 1

    pinger = Pinger(interval=initial)
    listener = EventListener(own_postgres.url, retry_interval=initial)
    listener.subscribe(subscriber)
    try:
        await pinger.start()
        await listener.start()
        await listener.wait_listening()
        await pinger.wait_for_pass()

        await asyncio.to_thread(own_postgres.stop)
        async with asyncio.timeout(60):
            await grown.wait()
        polled_during_outage = polled
        for who in ("pinger", "event-listener"):
            assert all(w <= outage.RECONNECT_MAX for w in waits[who]), waits[who]
        assert not listener.listening

        await asyncio.to_thread(own_postgres.start)
        await listener.wait_listening(within=60)
        await pinger.wait_for_pass(within=60)
        assert polled_during_outage > 0
    finally:
        await listener.stop()
        await pinger.stop()
        await pool.close()
