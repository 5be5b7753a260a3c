"""The server process: listeners, health, metrics, server.json and SIGTERM."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import httpx
import psycopg
import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2

from conveyor.server import app
from conveyor.server.app import ConveyorServer
from conveyor.server.gateway.app import build_http_app
from conveyor.server.grpc_server import HEALTH_SERVICE_NAME
from conveyor.server.services import default_hooks
from conveyor.server.settings import Settings


async def test_server_binds_free_ports_and_writes_server_json(server: ConveyorServer) -> None:
    assert server.grpc_port > 0
    assert server.http_port > 0
    written = json.loads((server.data_dir / "server.json").read_text())
    assert written == {
        "grpc": f"127.0.0.1:{server.grpc_port}",
        "http": f"127.0.0.1:{server.http_port}",
    }


async def test_healthz_and_metrics(server: ConveyorServer) -> None:
    async with httpx.AsyncClient(base_url=server.http_base_url, timeout=5) as http:
        health = await http.get("/healthz")
        metrics = await http.get("/metrics")

    assert health.status_code == 200
    assert health.json() == {"status": "SERVING"}
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    assert "python_info" in metrics.text


async def test_grpc_health_and_reflection(server: ConveyorServer) -> None:
    # Raw method handles: the typeshed stubs for the health and reflection stubs are
    # untyped, and these two calls are all the test needs.
    async with grpc.aio.insecure_channel(server.grpc_target) as channel:
        check = channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        health = await check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        reflect = channel.stream_stream(
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        call = reflect(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)
        listed = [response async for response in call]

    assert health.status == health_pb2.HealthCheckResponse.SERVING
    names = {s.name for s in listed[0].list_services_response.service}
    assert HEALTH_SERVICE_NAME in names


async def test_healthz_is_503_when_not_serving() -> None:
    async def unhealthy() -> bool:
        return False

    app = build_http_app(health=unhealthy)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        response = await http.get("/healthz")

    assert response.status_code == 503
    assert response.json() == {"status": "NOT_SERVING"}


async def test_stop_removes_server_json(server_settings: Settings) -> None:
    server = ConveyorServer(server_settings)
    await server.start()
    assert (server.data_dir / "server.json").exists()

    await server.stop(grace=0)

    assert not (server.data_dir / "server.json").exists()


async def test_the_started_process_freezes_its_objects_out_of_the_collector(
    server_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """run_server (the process's main) freezes what start made, so a full collection
    no longer walks the modules and services (the enqueue-to-start tail)."""
    monkeypatch.setattr(app, "configure_logging", lambda *_, **__: None)  # the test's logs
    gc.unfreeze()
    hooks = default_hooks()
    running = asyncio.create_task(app.run_server(server_settings, register=hooks.register))
    try:
        deadline = time.monotonic() + 60
        while gc.get_freeze_count() == 0 and not running.done():
            assert time.monotonic() < deadline, "nothing frozen within 60 s of the start"
            await asyncio.sleep(0.05)
        if running.done():
            running.result()  # what ended it
        assert gc.get_freeze_count() > 10_000
        assert (server_settings.data_dir / "server.json").exists()
        os.kill(os.getpid(), signal.SIGTERM)  # run_server's own handler stops it
        await asyncio.wait_for(running, 60)
    finally:
        running.cancel()
        gc.unfreeze()


async def test_server_key_is_shared_through_the_database(
    server: ConveyorServer, server_settings: Settings
) -> None:
    replica = ConveyorServer(server_settings.replace(data_dir=server.data_dir.parent / "other"))
    await replica.start()
    try:
        assert len(server.context.server_key) == 32
        assert replica.context.server_key == server.context.server_key
    finally:
        await replica.stop(grace=0)


def _wait_for_server_json(
    path: Path, process: subprocess.Popen[bytes], timeout: float, log: Path
) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(
                f"server exited early with {process.returncode}:\n{log.read_text()}"
            )
        if path.exists():
            addresses: dict[str, str] = json.loads(path.read_text())
            return addresses
        time.sleep(0.05)
    raise AssertionError(f"no {path} after {timeout} s")


def test_process_exits_zero_on_sigterm_within_grace(tmp_path: Path) -> None:
    # Not under pytest's basetemp: the embedded PostgreSQL runs as another user, and any
    # other pytest starting on the machine resets pytest-of-<user> to 0700 (conftest).
    data_dir = Path(tempfile.mkdtemp(prefix="conveyor-test-sigterm-")) / "data"
    try:
        _exits_zero_on_sigterm(data_dir, tmp_path)
    finally:
        shutil.rmtree(data_dir.parent, ignore_errors=True)


def _exits_zero_on_sigterm(data_dir: Path, tmp_path: Path) -> None:
    grace = 3.0
    # The laptop path: no DATABASE_URL, so the server starts its embedded PostgreSQL.
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env.pop("DATABASE_URL", None)
    env["CONVEYOR_SHUTDOWN_GRACE"] = str(grace)
    stderr_path = tmp_path / "stderr.log"
    command = [
        sys.executable,
        "-m",
        "conveyor.server",
        "--data-dir",
        str(data_dir),
        "--grpc-address",
        "127.0.0.1:0",
        "--http-address",
        "127.0.0.1:0",
    ]
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(command, env=env, stderr=stderr, stdout=subprocess.DEVNULL)
        try:
            addresses = _wait_for_server_json(
                data_dir / "server.json", process, timeout=60, log=stderr_path
            )
            health = httpx.get(f"http://{addresses['http']}/healthz", timeout=5)
            assert health.status_code == 200

            process.send_signal(signal.SIGTERM)
            started = time.monotonic()
            returncode = process.wait(timeout=grace + 30)
            elapsed = time.monotonic() - started
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()

    log = stderr_path.read_text()
    assert returncode == 0, log
    # The server's own stop is bounded by the grace; the slack covers a loaded machine
    # (it once took 8.5 s at load 14 on 2 cores), not the server.
    assert elapsed < grace + 10, f"took {elapsed:.1f} s to exit\n{log}"
    assert not (data_dir / "server.json").exists()
    assert not (data_dir / "pg" / "postmaster.pid").exists(), "embedded PostgreSQL left running"
    # Our lines are JSON objects (gRPC's C core may add its own plain lines).
    events = [json.loads(line)["event"] for line in log.splitlines() if line.startswith("{")]
    assert "conveyor serving" in events
    assert events[-1] == "conveyor stopped"


@pytest.mark.parametrize("listener", ["grpc_address", "http_address"])
async def test_taken_port_fails_start_cleanly(server_settings: Settings, listener: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        server = ConveyorServer(server_settings.replace(**{listener: address}))

        with pytest.raises((OSError, RuntimeError)):
            await server.start()

    assert not (server.data_dir / "server.json").exists()
    # Everything it had opened was released, so the database can be dropped without FORCE.
    assert server.context.pool.closed


async def test_two_servers_starting_together_on_an_empty_database(
    database_factory: Callable[..., str], tmp_path: Path
) -> None:
    """Both migrate, bootstrap and serve; the schema is applied once, one admin key minted."""
    url = database_factory()  # empty: not cloned from the migrated template
    servers = [
        ConveyorServer(
            Settings(
                data_dir=tmp_path / f"replica{i}",
                grpc_address="127.0.0.1:0",
                http_address="127.0.0.1:0",
                database_url=url,
                log_level="warning",
                shutdown_grace=1.0,
            ),
            default_hooks(),
        )
        for i in range(2)
    ]
    await asyncio.gather(*(s.start() for s in servers))
    try:
        keys = [s.data_dir / "admin.key" for s in servers]
        assert sum(k.exists() for k in keys) == 1
        async with await psycopg.AsyncConnection.connect(url) as conn:
            cursor = await conn.execute("SELECT count(*) FROM api_keys WHERE system")
            assert await cursor.fetchone() == (1,)
            cursor = await conn.execute(
                "SELECT count(*), count(DISTINCT version) FROM schema_migrations"
            )
            total, distinct = await cursor.fetchone() or (0, 0)
            assert total == distinct > 0
    finally:
        await asyncio.gather(*(s.stop(grace=0) for s in servers))


async def test_a_replica_holds_one_listen_connection(server: ConveyorServer) -> None:
    """Leasing, event watchers and webhooks share one LISTEN connection (DESIGN.md 6)."""
    from conveyor.server.wakeups.notifier import Notifier

    notifier = next(loop for loop in server.context.loops if isinstance(loop, Notifier))
    await notifier.wait_listening()
    async with await psycopg.AsyncConnection.connect(server.context.database_url) as conn:
        cursor = await conn.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database()"
            " AND application_name IN ('conveyor-listen', 'conveyor-events')"
        )
        assert await cursor.fetchone() == (1,)


@pytest.mark.parametrize("level", ["debug", "info"])
async def test_rpc_log_lines_carry_the_request_id(
    server_settings: Settings, capfd: pytest.CaptureFixture[str], level: str
) -> None:
    """Every call logs with its request id at debug; at info, failed and slow calls do."""
    from conveyor.client import AsyncClient, NotFoundError
    from conveyor.v1 import project_pb2

    running = ConveyorServer(server_settings.replace(log_level=level), default_hooks())
    await running.start()
    try:
        key = (running.data_dir / "admin.key").read_text().strip()
        async with AsyncClient(running.grpc_target, api_key=key) as client:
            await client.projects.GetProject(
                project_pb2.GetProjectRequest(name="projects/default"),
                metadata=(("x-request-id", "req-ok"),),
            )
            with pytest.raises(NotFoundError):
                await client.projects.GetProject(
                    project_pb2.GetProjectRequest(name="projects/missing"),
                    metadata=(("x-request-id", "req-missing"),),
                )
    finally:
        await running.stop(grace=0)
    lines = [
        json.loads(line)
        for line in capfd.readouterr().err.splitlines()
        if line.startswith("{") and '"rpc"' in line
    ]
    by_id = {line.get("request_id"): line for line in lines if line.get("event") == "rpc"}
    assert by_id["req-missing"]["code"] == "NOT_FOUND"
    assert by_id["req-missing"]["method"] == "/conveyor.v1.ProjectService/GetProject"
    assert ("req-ok" in by_id) == (level == "debug")
