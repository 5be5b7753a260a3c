"""`conveyor serve --processes 2`: two server processes behind one pair of ports, one
server.json, one shutdown."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import httpx
import pytest
from google.protobuf import struct_pb2

from conveyor.client._client import CHANNEL_OPTIONS
from conveyor.server.processes import process_count
from conveyor.v1 import task_pb2, task_service_pb2, task_service_pb2_grpc


def children_of(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(p) for p in text.split()]


def connections_on(pid: int, port: int) -> int:
    """Established TCP connections process `pid` holds whose local port is `port`."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "01" and inode in inodes and int(local.rsplit(":", 1)[1], 16) == port:
                count += 1
    return count


def start(data_dir: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    argv = ["--processes", "2", "--data-dir", str(data_dir), "--log-level", "warning"]
    argv += ["--grpc-address", "127.0.0.1:0", "--http-address", "127.0.0.1:0"]
    return subprocess.Popen([sys.executable, "-m", "conveyor.server", *argv], env=env)


def running(pids: list[int]) -> list[int]:
    return [pid for pid in pids if Path(f"/proc/{pid}").exists()]


def test_process_count() -> None:
    assert process_count("3") == 3
    assert process_count("auto") == (os.cpu_count() or 1)
    for bad in ("0", "-1", "many"):
        with pytest.raises(ValueError):
            process_count(bad)


async def test_two_processes_share_the_ports_and_stop_together(
    tmp_path: Path, database_url: str
) -> None:
    data_dir = tmp_path / "data"
    env = dict(os.environ, DATABASE_URL=database_url, CONVEYOR_SHUTDOWN_GRACE="2")
    supervisor = start(data_dir, env)
    try:
        server_json = data_dir / "server.json"
        deadline = time.monotonic() + 90
        while not server_json.exists():
            assert supervisor.poll() is None, "the supervisor exited"
            assert time.monotonic() < deadline, "server.json never appeared"
            await asyncio.sleep(0.1)
        addresses = json.loads(server_json.read_text())
        children = children_of(supervisor.pid)
        assert len(children) == 2
        admin = (data_dir / "admin.key").read_text().strip()
        grpc_port = int(addresses["grpc"].rsplit(":", 1)[1])

        # Sixteen connections (own subchannels: grpc would otherwise share one): the
        # kernel spreads them over both processes, and each answers calls on its own.
        options = [("grpc.use_local_subchannel_pool", 1), *CHANNEL_OPTIONS]
        channels = [
            grpc.aio.insecure_channel(addresses["grpc"], options=options) for _ in range(16)
        ]
        try:
            for channel in channels:
                stub = task_service_pb2_grpc.TaskServiceStub(channel)
                created = await stub.CreateTask(
                    task_service_pb2.CreateTaskRequest(
                        parent="projects/default", task=task_pb2.Task(queue="q", kind="k")
                    ),
                    metadata=(("authorization", f"Bearer {admin}"),),
                )
                assert created.name
            taken = {pid: connections_on(pid, grpc_port) for pid in children}
            assert all(n > 0 for n in taken.values()), taken
            assert sum(taken.values()) >= 16
            # Every process takes the service's message limits, not gRPC's 4 MiB default
            # (a batch of 5 inputs of 850 kB, about 4.3 MB, on each connection).
            big = struct_pb2.Value(string_value="x" * 850_000)
            batch = task_service_pb2.BatchCreateTasksRequest(
                parent="projects/default",
                requests=[
                    task_service_pb2.CreateTaskRequest(
                        task=task_pb2.Task(queue="q", kind="k", input=big)
                    )
                    for _ in range(5)
                ],
            )
            assert batch.ByteSize() > 4 * 1024 * 1024
            for channel in channels:
                stub = task_service_pb2_grpc.TaskServiceStub(channel)
                answer = await stub.BatchCreateTasks(
                    batch, metadata=(("authorization", f"Bearer {admin}"),)
                )
                assert [r.WhichOneof("result") for r in answer.results] == ["task"] * 5
        finally:
            for channel in channels:
                await channel.close()
        for _ in range(8):
            async with httpx.AsyncClient(base_url=f"http://{addresses['http']}") as http:
                assert (await http.get("/healthz")).json() == {"status": "SERVING"}

        supervisor.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(supervisor.wait, 60) == 0
        # Both processes ended (reaped by the supervisor) and the file is gone.
        assert running(children) == []
        assert not server_json.exists()
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
            supervisor.wait()
