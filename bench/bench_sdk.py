"""The SDK Worker's own CPU per task, without gRPC or a server.

    .venv/bin/python bench/bench_sdk.py [--concurrency 100] [--tasks 40000] [--sync]

A Worker runs no-op handlers against a fake Connect call that answers each report with
its ack and a new lease, as the server does; every message is serialized and parsed as
it would be on the wire (the lease is the shape the server sends). It prints the
process's CPU per task over the last 90% of the tasks: the SDK's Python (and the fake's
small share), which bench_queue.py's "us SDK CPU" figure adds gRPC's cost to. Use it to
compare two trees (PYTHONPATH=<other tree>/client runs that tree's SDK) and to profile
(--profile prints cProfile's top functions).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import time
from collections.abc import AsyncIterator
from typing import Any

from google.protobuf import duration_pb2

from conveyor.client import AsyncClient, Worker
from conveyor.v1 import enums_pb2, task_pb2, worker_pb2

PARENT = "projects/bench"


def lease(i: int) -> task_pb2.Lease:
    """A lease as the server pushes one for a bench task."""
    task = task_pb2.Task(
        name=f"{PARENT}/tasks/{i:032x}",
        queue="q",
        kind="bench.noop",
        priority=5,
        state=enums_pb2.TASK_STATE_RUNNING,
        attempt=1,
        lease_duration=duration_pb2.Duration(seconds=30),
        root_task=f"{PARENT}/tasks/{i:032x}",
        worker=f"{PARENT}/workers/w",
        creator=f"{PARENT}/apiKeys/k",
    )
    task.input.struct_value.update({"i": i})
    for stamp in (task.create_time, task.schedule_time, task.start_time, task.update_time):
        stamp.GetCurrentTime()
    task.retry_policy.max_attempts = 3
    task.retry_policy.initial_backoff.seconds = 1
    task.retry_policy.max_backoff.seconds = 3600
    result = task_pb2.Lease(task=task, lease_id=f"{i:032x}")
    result.lease_expire_time.GetCurrentTime()
    return result


class FakeCall:
    """A Connect call answered in process: acks and a new lease for each report."""

    def __init__(self, requests: AsyncIterator[worker_pb2.ConnectRequest], total: int) -> None:
        self._out: asyncio.Queue[worker_pb2.ConnectResponse | None] = asyncio.Queue()
        self._total, self._sent = total, 0
        self._task = asyncio.ensure_future(self._serve(requests))

    def _push(self, message: worker_pb2.ConnectResponse) -> None:
        self._out.put_nowait(worker_pb2.ConnectResponse.FromString(message.SerializeToString()))

    def _assign(self, count: int) -> None:
        leases = []
        while count > 0 and self._sent < self._total:
            leases.append(lease(self._sent))
            self._sent += 1
            count -= 1
        if leases:
            self._push(worker_pb2.ConnectResponse(assignments=worker_pb2.LeaseBatch(leases=leases)))

    async def _serve(self, requests: AsyncIterator[worker_pb2.ConnectRequest]) -> None:
        async for sent in requests:
            request = worker_pb2.ConnectRequest.FromString(sent.SerializeToString())
            kind = request.WhichOneof("message")
            if kind == "hello":
                welcome = worker_pb2.Welcome(worker=request.hello.worker)
                self._push(worker_pb2.ConnectResponse(welcome=welcome))
            elif kind == "credit":
                self._assign(request.credit.tasks)
            elif kind == "reports":
                acks = worker_pb2.ReportAckBatch()
                for report in [*request.reports.completes, *request.reports.fails]:
                    acks.acks.add(name=report.name, lease_id=report.lease_id)
                self._push(worker_pb2.ConnectResponse(report_acks=acks))
                self._assign(len(acks.acks))
        self._out.put_nowait(None)

    def __aiter__(self) -> FakeCall:
        return self

    async def __anext__(self) -> worker_pb2.ConnectResponse:
        message = await self._out.get()
        if message is None:
            raise StopAsyncIteration
        return message

    def cancel(self) -> None:
        self._task.cancel()


class FakeClient(AsyncClient):
    """What a Worker uses of an AsyncClient: `workers.Connect`."""

    def __init__(self, total: int) -> None:  # no channel
        self.target, self.api_key, self.project = "fake", "", PARENT
        self.workers: Any = self
        self._total = total

    def Connect(self, requests: AsyncIterator[worker_pb2.ConnectRequest]) -> FakeCall:
        return FakeCall(requests, self._total)


async def measure(concurrency: int, total: int, sync: bool) -> float:
    """CPU seconds per task over the last 90% of `total` tasks."""
    worker = Worker(FakeClient(total), queues=["q"], concurrency=concurrency, worker_id="w")
    loop = asyncio.get_running_loop()
    done = 0
    finished = asyncio.Event()
    mark: list[tuple[float, int]] = []

    def count() -> None:
        nonlocal done
        done += 1
        if done == total // 10:
            mark.append((time.process_time(), done))
        if done == total:
            finished.set()

    if sync:

        @worker.task("bench.noop")
        def noop_sync(ctx: Any) -> dict[str, bool]:
            loop.call_soon_threadsafe(count)
            return {"ok": True}
    else:

        @worker.task("bench.noop")
        async def noop(ctx: Any) -> dict[str, bool]:
            count()
            return {"ok": True}

    running = asyncio.create_task(worker.arun())
    await finished.wait()
    cpu = time.process_time()
    await worker.stop(grace=5)
    await running
    (cpu0, done0) = mark[0]
    return (cpu - cpu0) / (total - done0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--tasks", type=int, default=40_000)
    parser.add_argument("--sync", action="store_true", help="sync handlers (in threads)")
    parser.add_argument("--profile", action="store_true", help="print cProfile's top 30")
    args = parser.parse_args()
    run = lambda: asyncio.run(measure(args.concurrency, args.tasks, args.sync))  # noqa: E731
    if args.profile:
        profile = cProfile.Profile()
        seconds = profile.runcall(run)
        pstats.Stats(profile).sort_stats("tottime").print_stats(30)
    else:
        seconds = run()
    handlers = "sync" if args.sync else "async"
    print(
        f"SDK Worker, {handlers} handlers, concurrency {args.concurrency}: "
        f"{seconds * 1e6:.1f} us CPU per task (load average {os.getloadavg()[0]:.2f})"
    )


if __name__ == "__main__":
    main()
