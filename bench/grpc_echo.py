"""A bare gRPC echo server and its clients: what grpc.aio alone costs on this machine.

The queue benchmark measures the service against raw PostgreSQL. This module measures
the other half of its floor, in the same run: a grpc.aio server in its own process with
no database, no auth and no protobuf (bytes in, bytes out), driven in the same shapes
the service is driven in. Whatever the service does, it cannot beat these figures:

  - unary echo: one call in flight, round-trip latency (p50/p99). Enqueue-to-start needs
    at least a CreateTask call plus a push down the worker's stream.
  - unary echo, 16 calls in flight (calls/s): the shape of CreateTask x16.
  - the Connect loop shape: the server pushes `credit` messages the size of a Lease; the
    client answers each with a message the size of a CompleteTaskRequest; the server
    answers that with an ack the size of a ReportAck and pushes the next one (tasks/s).

    .venv/bin/python bench/grpc_echo.py          # the figures on their own
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc

UNARY = "/bench.Echo/Unary"
# The same, but the server first sends initial metadata of its own, as the service's
# interceptor does with x-request-id: one more batch through gRPC core per call.
UNARY_MD = "/bench.Echo/UnaryMetadata"
LOOP = "/bench.Echo/Loop"

# Serialized sizes of the service's messages for the benchmark's no-op task (measured).
CREATE_REQUEST_BYTES = 60
TASK_BYTES = 290
LEASE_BYTES = 340
COMPLETE_BYTES = 100
ACK_BYTES = 400


async def _unary(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    return b"\x00" * TASK_BYTES


async def _unary_metadata(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    await context.send_initial_metadata((("x-request-id", "0123456789abcdef"),))
    return b"\x00" * TASK_BYTES


async def _loop(
    requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[bytes, bytes]
) -> AsyncIterator[bytes]:
    """First request: the credit as ASCII digits; then one answer per request."""
    credit = int((await anext(requests)).decode())
    lease, ack = b"L" * LEASE_BYTES, b"A" * ACK_BYTES
    for _ in range(credit):
        yield lease
    async for _ in requests:
        yield ack
        yield lease


async def serve() -> None:
    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                "bench.Echo",
                {
                    "Unary": grpc.unary_unary_rpc_method_handler(_unary),
                    "UnaryMetadata": grpc.unary_unary_rpc_method_handler(_unary_metadata),
                    "Loop": grpc.stream_stream_rpc_method_handler(_loop),
                },
            )
        ]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(port, flush=True)
    await server.wait_for_termination()


class EchoServer:
    """The echo server as a subprocess (its CPU is its own, as the service's is)."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "serve"],
            stdout=subprocess.PIPE,
            env={**os.environ, "GRPC_VERBOSITY": "ERROR"},
        )
        assert self.process.stdout is not None
        self.target = f"127.0.0.1:{int(self.process.stdout.readline())}"

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


async def unary_latency(target: str, samples: int) -> list[float]:
    """Seconds per unary round trip, one call in flight (after a warm-up)."""
    async with grpc.aio.insecure_channel(target) as channel:
        call: Any = channel.unary_unary(UNARY)
        payload = b"\x00" * CREATE_REQUEST_BYTES
        for _ in range(20):
            await call(payload)
        times = []
        for _ in range(samples):
            t0 = time.perf_counter()
            await call(payload)
            times.append(time.perf_counter() - t0)
        return times


async def unary_rate(
    target: str, seconds: float, in_flight: int = 16, method: str = UNARY
) -> float:
    """Unary calls per second with `in_flight` callers."""
    async with grpc.aio.insecure_channel(target) as channel:
        call: Any = channel.unary_unary(method)
        payload = b"\x00" * CREATE_REQUEST_BYTES
        done = 0
        deadline = time.monotonic() + seconds

        async def caller() -> None:
            nonlocal done
            while time.monotonic() < deadline:
                await call(payload)
                done += 1

        started = time.monotonic()
        await asyncio.gather(*(caller() for _ in range(in_flight)))
        return done / (time.monotonic() - started)


async def loop_rate(target: str, credit: int, seconds: float) -> float:
    """Tasks per second through the Connect loop's shape (no database, no protobuf)."""
    outbox: asyncio.Queue[bytes | None] = asyncio.Queue()
    outbox.put_nowait(str(credit).encode())

    async def requests() -> AsyncIterator[bytes]:
        while (message := await outbox.get()) is not None:
            yield message

    complete = b"C" * COMPLETE_BYTES
    async with grpc.aio.insecure_channel(target) as channel:
        loop: Any = channel.stream_stream(LOOP)
        call = loop(requests())
        done = 0
        started = 0.0
        deadline = float("inf")
        async for message in call:
            if message[:1] == b"L":
                outbox.put_nowait(complete)
                continue
            if not started:
                started = time.monotonic()
                deadline = started + seconds
            done += 1
            if time.monotonic() >= deadline:
                break
        elapsed = time.monotonic() - started
        outbox.put_nowait(None)
        call.cancel()
        return done / elapsed


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def cpu_seconds(pid: int) -> float:
    """User + system CPU of process `pid` so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure(seconds: float, samples: int) -> dict[str, Any]:
    """Every echo figure, against a fresh echo server, with the echo server's CPU per
    call (or per task for the loop shapes): the floor under the service's own."""
    server = EchoServer()
    pid = server.process.pid
    results: dict[str, Any] = {}
    try:
        results["echo_unary_latency"] = await unary_latency(server.target, samples)
        for name, run in (
            ("echo_unary_16", lambda: unary_rate(server.target, seconds)),
            ("echo_unary_16_md", lambda: unary_rate(server.target, seconds, method=UNARY_MD)),
            ("echo_loop_1", lambda: loop_rate(server.target, 1, seconds)),
            ("echo_loop_100", lambda: loop_rate(server.target, 100, seconds)),
        ):
            cpu0, wall0 = cpu_seconds(pid), time.monotonic()
            rate = await run()
            cpu, wall = cpu_seconds(pid) - cpu0, time.monotonic() - wall0
            results[name] = rate
            if rate:
                results[f"{name}_server_cpu_us"] = cpu / (rate * wall) * 1e6
        return results
    finally:
        server.stop()


def main() -> None:
    if sys.argv[1:] == ["serve"]:
        asyncio.run(serve())
        return
    results = asyncio.run(measure(2.0, 200))
    latency = results["echo_unary_latency"]
    p50, p99 = pct(latency, 0.5) * 1e3, pct(latency, 0.99) * 1e3
    print(f"unary echo        p50 {p50:.2f} ms  p99 {p99:.2f} ms")
    for label, name in (
        ("unary echo x16   ", "echo_unary_16"),
        ("  + initial md   ", "echo_unary_16_md"),
        ("Connect shape N=1", "echo_loop_1"),
        ("Connect shape 100", "echo_loop_100"),
    ):
        cpu = results.get(f"{name}_server_cpu_us", 0.0)
        print(f"{label} {results[name]:9.0f} per s  [{cpu:6.0f} us echo server CPU each]")


if __name__ == "__main__":
    main()
