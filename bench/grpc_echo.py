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
LOOP = "/bench.Echo/Loop"

# Serialized sizes of the service's messages for the benchmark's no-op task (measured).
CREATE_REQUEST_BYTES = 60
TASK_BYTES = 290
LEASE_BYTES = 340
COMPLETE_BYTES = 100
ACK_BYTES = 400


async def _unary(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
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


async def unary_rate(target: str, seconds: float, in_flight: int = 16) -> float:
    """Unary calls per second with `in_flight` callers."""
    async with grpc.aio.insecure_channel(target) as channel:
        call: Any = channel.unary_unary(UNARY)
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


async def measure(seconds: float, samples: int) -> dict[str, Any]:
    """Every echo figure, against a fresh echo server."""
    server = EchoServer()
    try:
        return {
            "echo_unary_latency": await unary_latency(server.target, samples),
            "echo_unary_16": await unary_rate(server.target, seconds),
            "echo_loop_1": await loop_rate(server.target, 1, seconds),
            "echo_loop_100": await loop_rate(server.target, 100, seconds),
        }
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
    print(f"unary echo x16    {results['echo_unary_16']:9.0f} calls/s")
    print(f"Connect shape N=1 {results['echo_loop_1']:9.0f} tasks/s")
    print(f"Connect shape 100 {results['echo_loop_100']:9.0f} tasks/s")


if __name__ == "__main__":
    main()
