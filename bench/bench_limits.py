"""Request limits per API key (#21 point 1): one key's flood against another key's p99.

    .venv/bin/python bench/bench_limits.py [--quick] [--seconds 10] [--flood 16] [--json]

Starts its own embedded PostgreSQL and one Conveyor server as a subprocess (the helpers
of bench_queue.py), fills a queue, and makes two viewer keys of one project:

  - `quiet`: unlimited; one caller, one GetTask at a time (a cheap read), whose latency
    is measured, in a process of its own;
  - `flood`: rate_limits.read of FLOOD_RATE calls/s (burst the same); `--flood` callers
    in another process send ListTasks pages of 100, each calling again at once when its
    last call ended, through a bare stub that ignores RetryInfo: the issue's flood, an
    attack rather than a client. Every refusal still costs the server one gRPC call.

Each process has its own event loop, so the flood's client does not delay the quiet
caller's; and the flood process runs at a lower priority (FLOOD_NICE): on this 2-core
machine it shares the cores with the server, PostgreSQL and the quiet caller, where a
real flood's client would be on its own machine. Its CPU and call rates are printed.

Phases, each `--seconds` long after `--warmup` unrecorded seconds: the quiet caller
alone (its quiet figure), the quiet caller during the limited flood (the target), and for
information only: during the same flood from the Python client as shipped (which retries
a refused call after the server's RetryInfo delay: a polite client), and during the
flood of a key without limits. Target: the quiet key's p99 during the limited flood
within 2x of its quiet p99, printed PASS or MISS.

Diagnostics (not the case): --phases runs a subset, --page-size, --view and --flood-rate
change the flood, --statements prints each phase's pg_stat_statements.
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
import bench_statements
from bench_queue import served, svc_fill

TARGET = 2.0
FLOOD_RATE = 10.0
"""The flood key's read budget, calls per second: what a tenant might be granted."""
QUEUE = "limits"
FLOOD_NICE = 10
"""The flood process's niceness: it stands for a client on another machine."""
_VIEWS = {"full": 2, "basic": 1}
"""--view (a diagnostic): the flood's TaskView, FULL as the case defines it."""
PHASES = ("quiet", "limited", "polite", "unlimited")


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


def quiet_process(
    target: str, key: str, task: str, warmup: float, seconds: float, out: Any
) -> None:
    """The quiet caller, in its own process: `warmup` seconds unrecorded, then `seconds`
    recorded; puts the latencies on `out`."""
    asyncio.run(quiet_calls(target, key, task, warmup))
    out.put(asyncio.run(quiet_calls(target, key, task, seconds)))


async def _flood(
    target: str,
    key: str,
    callers: int,
    hostile: bool,
    stop: Any,
    ready: Any,
    page_size: int = 100,
    view: int = 0,
) -> dict[str, int]:
    """`callers` loops of ListTasks until `stop`. Hostile: a bare stub that calls again at
    once after a refusal; else the Python client as shipped, which retries a refused
    call after the server's RetryInfo delay (and the loop calls again when it gives up)."""
    import grpc

    from conveyor.client import AsyncClient, ConveyorError
    from conveyor.v1 import task_service_pb2, task_service_pb2_grpc

    metadata = (("authorization", f"Bearer {key}"),)
    request = task_service_pb2.ListTasksRequest(
        parent=bench_queue.PARENT, page_size=page_size, view=view
    )
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
    target: str,
    key: str,
    callers: int,
    hostile: bool,
    stop: Any,
    ready: Any,
    out: Any,
    page_size: int = 100,
    view: int = 0,
) -> None:
    """The flood, in its own process at a lower priority: runs until `stop`, then puts its
    counts and its CPU seconds on `out`."""
    os.nice(FLOOD_NICE)
    cpu = time.process_time()
    counts: dict[str, Any] = asyncio.run(
        _flood(target, key, callers, hostile, stop, ready, page_size, view)
    )
    counts["cpu_seconds"] = time.process_time() - cpu
    out.put(counts)


async def measured(
    probe: Any,
    target: str,
    quiet_key: str,
    task: str,
    args: argparse.Namespace,
    flood: tuple[str, bool] | None,
) -> tuple[list[float], dict[str, Any]]:
    """The quiet caller's latencies (from its own process), alone or while `flood`'s key
    floods (hostile: ignoring RetryInfo); the flood's counts, rates and CPU."""
    spawn = multiprocessing.get_context("spawn")
    stop, ready, out = spawn.Event(), spawn.Event(), spawn.Queue()
    flooder = None
    if flood is not None:
        flooder = spawn.Process(
            target=flood_process,
            args=(
                *(target, flood[0], args.flood, flood[1], stop, ready, out),
                *(args.page_size, _VIEWS[args.view]),
            ),
        )
        flooder.start()
    quiet_out = spawn.Queue()
    quiet = spawn.Process(
        target=quiet_process,
        args=(target, quiet_key, task, args.warmup, args.seconds, quiet_out),
    )
    try:
        if flooder is not None:
            await asyncio.to_thread(ready.wait, 60)
        began, cpu = time.monotonic(), probe.cpu()
        quiet.start()
        latencies: list[float] = await asyncio.to_thread(quiet_out.get, True, 120)
        stop.set()
        counts: dict[str, Any] = {}
        if flooder is not None:
            counts = await asyncio.to_thread(out.get, True, 60)
        wall = time.monotonic() - began
        counts["seconds"] = wall
        counts["server_cpu_share"] = (probe.cpu() - cpu) / wall
        return latencies, counts
    finally:
        stop.set()
        for process in (quiet, flooder):
            if process is not None and process.pid is not None:
                await asyncio.to_thread(process.join, 30)
                if process.is_alive():
                    process.kill()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from conveyor.client import AsyncClient
    from conveyor.v1 import enums_pb2, project_pb2

    results: dict[str, Any] = {
        "seconds": args.seconds,
        "flood_callers": args.flood,
        "flood_rate": args.flood_rate,
        "cores": os.cpu_count(),
        "loadavg_start": os.getloadavg(),
    }
    async with served("bench_limits", statements=args.statements) as service:
        async with AsyncClient(
            service.target, api_key=service.key, project=bench_queue.PROJECT
        ) as client:
            await svc_fill(client, QUEUE, 1000)
            task = (await client.tasks.ListTasks(_list_request(bench_queue.PARENT))).tasks[0].name
            limits = project_pb2.RateLimits(
                read=project_pb2.RequestLimit(
                    requests_per_second=args.flood_rate, burst=max(1, int(args.flood_rate))
                )
            )
            viewer = enums_pb2.ROLE_VIEWER
            quiet = (await client.create_api_key(bench_queue.PARENT, viewer)).secret
            limited = (
                await client.create_api_key(bench_queue.PARENT, viewer, rate_limits=limits)
            ).secret
            unlimited = (await client.create_api_key(bench_queue.PARENT, viewer)).secret
        phases: tuple[tuple[str, tuple[str, bool] | None], ...] = (
            ("quiet", None),
            ("limited", (limited, True)),
            ("polite", (limited, False)),
            ("unlimited", (unlimited, True)),
        )
        for name, flood in phases:
            if name not in args.phases:
                continue
            if args.statements:
                bench_statements.reset(service.url)
            load = os.getloadavg()[0]
            latencies, counts = await measured(
                service.probe, service.target, quiet, task, args, flood
            )
            results[name] = latencies
            if args.statements:
                calls = len(latencies) + counts.get("admitted", 0)
                bench_statements.report(service.url, name, calls, unit="call")
            results[f"{name}_flood"] = {**counts, "loadavg": load}
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
        f" 100, read budget {results['flood_rate']:g}/s, flood process at nice {FLOOD_NICE})"
        f" against another key's GetTask from its own process; {results['cores']} cores,"
        f" {results['seconds']:g} s per phase; load average {load0:.2f} -> {load1:.2f}"
    )
    rows = (
        ("quiet", "quiet key alone"),
        ("limited", "flood of a limited key, ignoring RetryInfo (target)"),
        ("polite", "same key, Python client honouring RetryInfo (info)"),
        ("unlimited", "flood of an unlimited key (info)"),
    )
    for name, label in rows:
        if name not in results:
            continue  # not in --phases
        latencies = results.get(name) or []
        flood = results.get(f"{name}_flood") or {}
        line = (
            f"  {label:53s} p50 {_pct(latencies, 0.5) * 1e3:7.2f} ms"
            f"  p99 {_pct(latencies, 0.99) * 1e3:7.2f} ms  ({len(latencies)} calls,"
            f" load {flood.get('loadavg', 0.0):.2f})"
        )
        if "admitted" in flood:
            seconds = flood["seconds"] or 1.0
            line += (
                f"; flood admitted {flood['admitted'] / seconds:.0f}/s,"
                f" refused {flood['refused'] / seconds:.0f}/s,"
                f" its client {flood['cpu_seconds'] / seconds:.2f} cores"
            )
        if flood:
            line += f"; server {flood['server_cpu_share']:.2f} cores"
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
    # Diagnostics only: the case itself is pages of 100, FULL, FLOOD_RATE, every phase.
    parser.add_argument(
        "--statements", action="store_true", help="pg_stat_statements of each phase"
    )
    parser.add_argument("--page-size", type=int, default=100, help="flood's page size")
    parser.add_argument("--view", choices=sorted(_VIEWS), default="full", help="flood's view")
    parser.add_argument(
        "--flood-rate", type=float, default=FLOOD_RATE, help="limited key's read budget, /s"
    )
    parser.add_argument(
        "--phases", default=",".join(PHASES), help=f"comma-separated subset of {PHASES}"
    )
    args = parser.parse_args()
    args.phases = tuple(args.phases.split(","))
    if args.seconds is None:
        args.seconds = 3.0 if args.quick else 10.0
    results = asyncio.run(run(args))
    if args.json:
        print(json.dumps(results, indent=2))
    report(results)


if __name__ == "__main__":
    main()
