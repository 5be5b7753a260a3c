"""Request limits per API key (#21 point 1): one key's flood against another key's p99.

    .venv/bin/python bench/bench_limits.py [--quick] [--seconds 5] [--flood 32] [--json]

Starts its own embedded PostgreSQL and one Conveyor server as a subprocess (the helpers
of bench_queue.py), fills a queue, and makes two viewer keys of one project:

  - `quiet`: unlimited; one caller, one GetTask at a time (a cheap read), whose latency
    is measured;
  - `flood`: rate_limits.read of FLOOD_RATE calls/s (burst the same); `--flood` callers
    in a separate process (so they do not share the quiet caller's event loop) send
    ListTasks pages of 100, each calling again as soon as its last call ended, through
    the Python client as shipped (which retries a refused call after the server's
    RetryInfo delay).

Phases, each `--seconds` long: the quiet caller alone (its quiet figure), the quiet
caller during the limited flood (the target), and for information only: during the
same flood from a bare stub that ignores RetryInfo and calls again at once (every
refusal still costs the server a gRPC call, about what a cheap read costs, so such a
flood is bounded by the key's budget in work but not in calls), and during the bare
flood of a key without limits. Target: the quiet key's p99 during the limited flood
within 2x of its quiet p99, printed PASS or MISS. The flood process reports how many of
its calls were admitted and how many refused (REQUEST_LIMITED).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import time
from typing import Any

import bench_queue
from bench_queue import served, svc_fill

TARGET = 2.0
FLOOD_RATE = 10.0
"""The flood key's read budget, calls per second: what a tenant might be granted."""
QUEUE = "limits"


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


async def quiet_calls(target: str, key: str, task: str, seconds: float) -> list[float]:
    """Sequential GetTask calls for `seconds`; each one's latency in seconds."""
    import grpc

    from conveyor.v1 import task_service_pb2, task_service_pb2_grpc

    metadata = (("authorization", f"Bearer {key}"),)
    request = task_service_pb2.GetTaskRequest(name=task)
    latencies: list[float] = []
    async with grpc.aio.insecure_channel(target) as channel:
        stub = task_service_pb2_grpc.TaskServiceStub(channel)
        await stub.GetTask(request, metadata=metadata)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            began = time.perf_counter()
            await stub.GetTask(request, metadata=metadata)
            latencies.append(time.perf_counter() - began)
    return latencies


async def _flood(
    target: str, key: str, callers: int, hostile: bool, stop: Any, ready: Any
) -> dict[str, int]:
    """`callers` loops of ListTasks until `stop`. Hostile: a bare stub that calls again at
    once after a refusal; else the Python client as shipped, which retries a refused
    call after the server's RetryInfo delay (and the loop calls again when it gives up)."""
    import grpc

    from conveyor.client import AsyncClient, ConveyorError
    from conveyor.v1 import task_service_pb2, task_service_pb2_grpc

    metadata = (("authorization", f"Bearer {key}"),)
    request = task_service_pb2.ListTasksRequest(parent=bench_queue.PARENT, page_size=100)
    counts = {"admitted": 0, "refused": 0, "other": 0}
    async with (
        AsyncClient(target, api_key=key) as client,
        grpc.aio.insecure_channel(target) as bare,
    ):
        stub = task_service_pb2_grpc.TaskServiceStub(bare) if hostile else client.tasks
        await stub.ListTasks(request, metadata=metadata)

        async def caller() -> None:
            while not stop.is_set():
                try:
                    await stub.ListTasks(request, metadata=metadata)
                    counts["admitted"] += 1
                except (grpc.aio.AioRpcError, ConveyorError) as error:
                    refused = error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                    counts["refused" if refused else "other"] += 1

        ready.set()
        await asyncio.gather(*(caller() for _ in range(callers)))
    return counts


def flood_process(
    target: str, key: str, callers: int, hostile: bool, stop: Any, ready: Any, out: Any
) -> None:
    """The flood, in its own process: runs until `stop`, then puts its counts on `out`."""
    out.put(asyncio.run(_flood(target, key, callers, hostile, stop, ready)))


async def flooded(
    probe: Any,
    target: str,
    quiet_key: str,
    flood_key: str,
    task: str,
    seconds: float,
    callers: int,
    hostile: bool,
) -> tuple[list[float], dict[str, Any], float]:
    """The quiet caller's latencies while `flood_key` floods; the flood's counts and
    its duration."""
    spawn = multiprocessing.get_context("spawn")
    stop, ready, out = spawn.Event(), spawn.Event(), spawn.Queue()
    process = spawn.Process(
        target=flood_process, args=(target, flood_key, callers, hostile, stop, ready, out)
    )
    process.start()
    try:
        await asyncio.to_thread(ready.wait, 60)
        began = time.monotonic()
        cpu = probe.cpu()
        latencies = await quiet_calls(target, quiet_key, task, seconds)
        stop.set()
        counts: dict[str, Any] = await asyncio.to_thread(out.get, True, 60)
        wall = time.monotonic() - began
        counts["server_cpu_share"] = (probe.cpu() - cpu) / wall
        return latencies, counts, wall
    finally:
        stop.set()
        await asyncio.to_thread(process.join, 30)
        if process.is_alive():
            process.kill()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from conveyor.client import AsyncClient
    from conveyor.v1 import enums_pb2, project_pb2

    results: dict[str, Any] = {
        "seconds": args.seconds,
        "flood_callers": args.flood,
        "flood_rate": FLOOD_RATE,
        "cores": os.cpu_count(),
        "loadavg_start": os.getloadavg(),
    }
    async with served("bench_limits") as service:
        async with AsyncClient(
            service.target, api_key=service.key, project=bench_queue.PROJECT
        ) as client:
            await svc_fill(client, QUEUE, 1000)
            task = (await client.tasks.ListTasks(_list_request(bench_queue.PARENT))).tasks[0].name
            limits = project_pb2.RateLimits(
                read=project_pb2.RequestLimit(requests_per_second=FLOOD_RATE, burst=int(FLOOD_RATE))
            )
            viewer = enums_pb2.ROLE_VIEWER
            quiet = (await client.create_api_key(bench_queue.PARENT, viewer)).secret
            limited = (
                await client.create_api_key(bench_queue.PARENT, viewer, rate_limits=limits)
            ).secret
            unlimited = (await client.create_api_key(bench_queue.PARENT, viewer)).secret
        # Warm-up, not recorded: the quiet caller's first calls and the server's caches.
        await quiet_calls(service.target, quiet, task, args.warmup)
        results["quiet"] = await quiet_calls(service.target, quiet, task, args.seconds)
        phases = (
            ("limited", limited, False),
            ("hostile", limited, True),
            ("unlimited", unlimited, True),
        )
        for name, key, hostile in phases:
            latencies, counts, wall = await flooded(
                service.probe, service.target, quiet, key, task, args.seconds, args.flood, hostile
            )
            results[name] = latencies
            results[f"{name}_flood"] = {**counts, "seconds": wall}
    results["loadavg_end"] = os.getloadavg()
    return results


def _list_request(parent: str) -> Any:
    from conveyor.v1 import task_service_pb2

    return task_service_pb2.ListTasksRequest(parent=parent, page_size=1)


def report(results: dict[str, Any]) -> bool:
    """Prints the figures and the target; True when it passed."""
    load0, load1 = results["loadavg_start"][0], results["loadavg_end"][0]
    print(
        f"Request limits: one key's flood ({results['flood_callers']} callers, ListTasks of"
        f" 100, read budget {results['flood_rate']:g}/s) against another key's GetTask;"
        f" {results['cores']} cores, {results['seconds']:g} s per phase; load average"
        f" {load0:.2f} -> {load1:.2f}"
    )
    rows = (
        ("quiet", "quiet key alone"),
        ("limited", "flood of a limited key, the Python client (target)"),
        ("hostile", "flood of a limited key ignoring RetryInfo (info)"),
        ("unlimited", "flood of an unlimited key (info)"),
    )
    for name, label in rows:
        latencies = results.get(name) or []
        line = (
            f"  {label:56s} p50 {_pct(latencies, 0.5) * 1e3:7.2f} ms"
            f"  p99 {_pct(latencies, 0.99) * 1e3:7.2f} ms  ({len(latencies)} calls)"
        )
        flood = results.get(f"{name}_flood")
        if flood:
            seconds = flood["seconds"] or 1.0
            line += (
                f"; flood admitted {flood['admitted'] / seconds:.0f}/s,"
                f" refused {flood['refused'] / seconds:.0f}/s;"
                f" server {flood['server_cpu_share']:.2f} cores"
            )
        print(line)
    quiet_p99 = _pct(results.get("quiet") or [], 0.99)
    limited_p99 = _pct(results.get("limited") or [], 0.99)
    if not quiet_p99 or not limited_p99:
        print("Target: not measured")
        return False
    ratio = limited_p99 / quiet_p99
    passed = ratio <= TARGET
    print(
        f"Target: quiet key's p99 during a limited flood <= {TARGET:g}x its quiet p99:"
        f" {ratio:.2f}x  {'PASS' if passed else 'MISS'}"
    )
    return passed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short phases (about 30 s)")
    parser.add_argument("--seconds", type=float, default=None, help="seconds per phase")
    parser.add_argument("--flood", type=int, default=16, help="flood callers in flight")
    parser.add_argument("--warmup", type=float, default=1.0, help="unrecorded warm-up, s")
    parser.add_argument("--json", action="store_true", help="print the raw results too")
    args = parser.parse_args()
    if args.seconds is None:
        args.seconds = 3.0 if args.quick else 10.0
    results = asyncio.run(run(args))
    if args.json:
        print(json.dumps(results, indent=2))
    report(results)


if __name__ == "__main__":
    main()
