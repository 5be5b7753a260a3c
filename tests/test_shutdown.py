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

import pytest

from conveyor.client import AsyncClient, ConveyorError

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
