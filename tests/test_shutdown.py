"""SIGTERM on a real `conveyor serve`: calls that arrive while it shuts down are refused
with UNAVAILABLE (which clients retry elsewhere), never CANCELLED.

Before the fix, gRPC's server.stop() began at once and cancelled the calls it had
received but not yet handed to the application: a client calling at that moment got
CANCELLED, which no client retries. Three rounds, because the old failure was a race.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from conveyor.client import AsyncClient, ConveyorError
from conveyor.server.app import ConveyorServer
from conveyor.server.services import default_hooks
from conveyor.server.settings import Settings
from conveyor.v1 import project_pb2, project_pb2_grpc

CALLERS = 16


def conveyor_command() -> list[str]:
    """The `conveyor` console script installed beside this interpreter."""
    script = Path(sys.executable).with_name("conveyor")
    assert script.exists(), script
    return [str(script)]


def spawn(command: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log:
        return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_for_server_json(path: Path, process: subprocess.Popen[bytes]) -> dict[str, str]:
    deadline = time.monotonic() + 60
    while not path.exists():
        assert process.poll() is None, "conveyor serve exited during startup"
        assert time.monotonic() < deadline, f"no {path} after 60 s"
        time.sleep(0.05)
    addresses: dict[str, str] = json.loads(path.read_text())
    return addresses


async def hammer(
    target: str,
    key: str,
    stop: asyncio.Event,
    codes: collections.Counter[str],
    flowing: asyncio.Event,
) -> None:
    """GetProject back to back with the Python client (which retries UNAVAILABLE as
    RetryInfo asks) until `stop`, counting the outcome of each call by status code."""
    async with AsyncClient(target, api_key=key) as client:
        while not stop.is_set():
            try:
                await client.get_project("projects/default")
            except ConveyorError as error:
                codes[error.code().name] += 1
            else:
                codes["OK"] += 1
                if codes["OK"] >= 200:
                    flowing.set()


@pytest.mark.parametrize("round_", range(3))
async def test_calls_during_sigterm_get_unavailable_not_cancelled(
    database_url: str, tmp_path: Path, round_: int
) -> None:
    data_dir = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env.update(DATABASE_URL=database_url, CONVEYOR_SHUTDOWN_GRACE="5")
    log_path = tmp_path / "serve.log"
    command = [
        *conveyor_command(),
        "serve",
        "--data-dir",
        str(data_dir),
        "--grpc-address",
        "127.0.0.1:0",
        "--http-address",
        "127.0.0.1:0",
    ]
    process = spawn(command, env, log_path)
    try:
        addresses = await asyncio.to_thread(wait_for_server_json, data_dir / "server.json", process)
        key = await asyncio.to_thread((data_dir / "admin.key").read_text)
        codes: collections.Counter[str] = collections.Counter()
        stop, flowing = asyncio.Event(), asyncio.Event()
        callers = [
            asyncio.create_task(hammer(addresses["grpc"], key.strip(), stop, codes, flowing))
            for _ in range(CALLERS)
        ]
        # Positive signal: the calls are flowing before the signal goes out.
        async with asyncio.timeout(30):
            await flowing.wait()
        process.send_signal(signal.SIGTERM)
        returncode = await asyncio.to_thread(process.wait, 30)
        stop.set()
        await asyncio.gather(*callers)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    assert returncode == 0, log_path.read_text()
    assert codes["CANCELLED"] == 0, dict(codes)
    assert set(codes) <= {"OK", "UNAVAILABLE"}, dict(codes)


async def test_a_call_in_flight_when_the_grace_runs_out_ends_unavailable(
    server_settings: Settings,
) -> None:
    """A call still being served near the end of the grace (here: waiting for a pool
    connection the test holds) is ended by the server with UNAVAILABLE, reason
    SHUTTING_DOWN and RetryInfo; gRPC's stop used to cancel it (CANCELLED, not retried)."""
    server = ConveyorServer(server_settings, default_hooks())
    await server.start()
    stopping: asyncio.Task[None] | None = None
    held = []
    try:
        key = (server.data_dir / "admin.key").read_text().strip()
        pool = server.context.pool
        # Every connection of the pool, so the call below waits for one.
        held = [await pool.getconn() for _ in range(pool.max_size)]
        async with grpc.aio.insecure_channel(server.grpc_target) as channel:
            stub = project_pb2_grpc.ProjectServiceStub(channel)
            call = stub.GetProject(
                project_pb2.GetProjectRequest(name="projects/default"),
                metadata=(("authorization", f"Bearer {key}"),),
            )
            # Positive signal: the server counts the call in flight (no event says so).
            async with asyncio.timeout(30):
                while server.context.in_flight.count == 0:  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
            stopping = asyncio.create_task(server.stop(grace=2.0))
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await call
        error = raised.value
        assert error.code() == grpc.StatusCode.UNAVAILABLE, error
        status = rpc_status.from_call(error)  # type: ignore[arg-type]
        assert status is not None
        info, retry = error_details_pb2.ErrorInfo(), error_details_pb2.RetryInfo()
        assert any(detail.Unpack(info) for detail in status.details), status
        assert any(detail.Unpack(retry) for detail in status.details), status
        assert info.reason == "SHUTTING_DOWN"
    finally:
        for conn in held:
            await pool.putconn(conn)
        await (stopping if stopping is not None else server.stop(grace=0))
