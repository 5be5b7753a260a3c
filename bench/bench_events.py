"""Event streams under load: what one replica streams, and what idle watchers cost.

    .venv/bin/python bench/bench_events.py [--seconds 5] [--only stream|idle]

Starts its own embedded PostgreSQL and one Conveyor server, then runs its load in
child processes (so the server's process is measured, not the load's):

1. Streaming. Tasks run (a Worker SDK process completes what a creator enqueues) while
   events are appended straight to the table at a target rate, each carrying a real
   task snapshot. One subscriber counts what WatchEvents delivers per second. Figures:
   the live rate, its ratio to the 5,000 events/s target, and its ratio to the same
   subscriber replaying a backlog with no load (the stream's ceiling, same run).
2. Idle subscribers. CreateTask throughput (concurrent callers) with no watchers, with
   500 idle WatchEvents streams of the project (500 different filters that match
   nothing, then 500 sharing one), and with none again. Figures: each rate and its
   ratio to the mean of the two baselines; the target is a cost under 10%.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
PROJECT = "bench"
PARENT = f"projects/{PROJECT}"


# Child process roles. Each prints one JSON line with its result.


def _varint(data: bytes, at: int) -> int:
    value = shift = 0
    while True:
        byte = data[at]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value
        at += 1
        shift += 7


async def role_subscriber(args: argparse.Namespace) -> dict[str, Any]:
    """A lean subscriber, so the figure is what the server streams rather than what a
    Python client can parse: the blocking gRPC client, events kept as bytes (only the
    id, the first field, is read), and the SDK's resume rule (reopen after the last id
    on RESOURCE_EXHAUSTED or UNAVAILABLE)."""
    return await asyncio.to_thread(_subscribe, args)


def _subscribe(args: argparse.Namespace) -> dict[str, Any]:
    import grpc

    from conveyor.v1 import event_pb2

    channel = grpc.insecure_channel(args.target)
    watch = channel.unary_stream(
        "/conveyor.v1.EventService/WatchEvents",
        request_serializer=event_pb2.WatchEventsRequest.SerializeToString,
        response_deserializer=None,
    )
    metadata = (("authorization", f"Bearer {args.key}"),)
    count = reconnects = 0
    first = last = 0.0
    cursor = args.after
    deadline = time.monotonic() + args.seconds + 60
    subscribed = False
    while True:
        call = watch(event_pb2.WatchEventsRequest(parent=PARENT, after=cursor), metadata=metadata)
        try:
            for raw in call:
                cursor = max(cursor, _varint(raw, 1))
                if b"conveyor.keepalive" in raw[:40]:
                    if not subscribed:
                        subscribed = True
                        print(json.dumps({"subscribed": True}), flush=True)
                    continue
                now = time.monotonic()
                if not count:
                    first = now
                    deadline = now + args.seconds
                count += 1
                last = now
                if (args.expect and count >= args.expect) or now >= deadline:
                    call.cancel()
                    break
            else:
                reconnects += 1
                continue
            break
        except grpc.RpcError as error:
            if error.code() not in (
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                grpc.StatusCode.UNAVAILABLE,
            ):
                raise
            reconnects += 1
    channel.close()
    elapsed = last - first
    return {
        "events": count,
        "seconds": elapsed,
        "rate": count / elapsed if elapsed else 0.0,
        "reconnects": reconnects,
    }


def _insert_events(url: str, rate: float, seconds: float, stop: threading.Event) -> int:
    import psycopg

    batch = 250
    inserted = 0
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT to_jsonb(t) FROM tasks t LIMIT 1").fetchone()
        snapshot = json.dumps(row[0]) if row else None
        started = time.monotonic()
        while not stop.is_set() and time.monotonic() - started < seconds:
            conn.execute(
                "INSERT INTO events (project, type, subject, task) "
                "SELECT %s, 'task.started', 'projects/bench/tasks/x', %s::jsonb "
                "FROM generate_series(1, %s)",
                (PROJECT, snapshot, batch),
            )
            inserted += batch
            ahead = inserted / rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
    return inserted


async def role_load(args: argparse.Namespace) -> dict[str, Any]:
    from conveyor.client import AsyncClient, Worker

    completed = 0
    created = 0
    async with AsyncClient(args.target, api_key=args.key, project=PROJECT) as client:
        worker = Worker(client, queues=["bench"], concurrency=16)

        @worker.task("bench.noop")
        async def noop(ctx: Any) -> dict[str, Any]:
            nonlocal completed
            completed += 1
            return {"ok": True}

        running = asyncio.create_task(worker.arun())
        stop = threading.Event()
        inserter = asyncio.create_task(
            asyncio.to_thread(_insert_events, args.database_url, args.rate, args.seconds, stop)
        )
        started = time.monotonic()
        while time.monotonic() - started < args.seconds:
            # About 100 tasks/s, each created, leased and completed (three events).
            await client.batch_create_tasks(
                [{"kind": "bench.noop", "queue": "bench", "input": {"i": i}} for i in range(10)]
            )
            created += 10
            await asyncio.sleep(0.1)
        inserted = await inserter
        await worker.stop(grace=5)
        running.cancel()
    return {"created": created, "completed": completed, "inserted": inserted}


async def role_enqueue(args: argparse.Namespace) -> dict[str, Any]:
    from conveyor.client import AsyncClient

    count = 0
    async with AsyncClient(args.target, api_key=args.key, project=PROJECT) as client:
        await client.create_task("bench.warmup", queue="enqueue")
        deadline = time.monotonic() + args.seconds

        async def caller() -> None:
            nonlocal count
            while time.monotonic() < deadline:
                await client.create_task("bench.enqueue", {"n": count}, queue="enqueue")
                count += 1

        started = time.monotonic()
        await asyncio.gather(*(caller() for _ in range(args.concurrency)))
        elapsed = time.monotonic() - started
    return {"created": count, "seconds": elapsed, "rate": count / elapsed}


async def role_idle(args: argparse.Namespace) -> dict[str, Any]:
    from conveyor.client import AsyncClient
    from conveyor.v1 import event_pb2

    async with AsyncClient(args.target, api_key=args.key) as client:
        calls = []
        for i in range(args.count):
            types = [f"idle.never.{i}"] if args.distinct else ["idle.never"]
            calls.append(
                client.events.WatchEvents(
                    event_pb2.WatchEventsRequest(
                        parent=PARENT, filter=event_pb2.EventFilter(types=types)
                    )
                )
            )
        await asyncio.gather(*(call.read() for call in calls))  # each one's opening keep-alive
        print(json.dumps({"ready": len(calls)}), flush=True)
        await asyncio.to_thread(sys.stdin.read)  # until the parent closes our stdin
        for call in calls:
            call.cancel()
    return {"closed": args.count}


ROLES = {
    "subscriber": role_subscriber,
    "load": role_load,
    "enqueue": role_enqueue,
    "idle": role_idle,
}


def child_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--role", required=True, choices=sorted(ROLES))
    parser.add_argument("--target", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--database-url", default="")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=8000.0)
    parser.add_argument("--after", type=int, default=0)
    parser.add_argument("--expect", type=int, default=0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--distinct", action="store_true")
    args = parser.parse_args(argv)
    result = asyncio.run(ROLES[args.role](args))
    result["cpu"] = time.process_time()  # the child's own CPU seconds, threads included
    print(json.dumps(result), flush=True)


# The orchestrating parent: the server lives here.


def _postgres_cpu(pgdata: Path) -> float:
    """CPU seconds of PostgreSQL: the postmaster with the children it reaped, and its live
    children (Linux /proc)."""
    try:
        postmaster = int((pgdata / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry.name) == postmaster:
            total += sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
        elif int(fields[1]) == postmaster:
            total += int(fields[11]) + int(fields[12])
    return total / ticks


class Child:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    async def line(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        while True:
            raw = await self.process.stdout.readline()
            if not raw:
                raise RuntimeError("child ended without a result")
            text = raw.decode().strip()
            if text.startswith("{"):
                result: dict[str, Any] = json.loads(text)
                return result

    async def finish(self) -> dict[str, Any]:
        result = await self.line()
        await self.process.wait()
        return result


async def spawn(role: str, target: str, key: str, *extra: str) -> Child:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(HERE),
        "--role",
        role,
        "--target",
        target,
        "--key",
        key,
        *extra,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        env=env,
    )
    return Child(process)


async def run(
    seconds: float, rate: float, rounds: int, only: set[str], idle_read_interval: float | None
) -> dict[str, Any]:
    import psycopg
    from psycopg.conninfo import make_conninfo

    from conveyor.client import AsyncClient
    from conveyor.server.app import ConveyorServer
    from conveyor.server.embedded import EmbeddedPostgres
    from conveyor.server.services import default_hooks
    from conveyor.server.settings import Settings
    from conveyor.server.streams.hub import EventHub
    from conveyor.v1 import enums_pb2

    root = Path(tempfile.mkdtemp(prefix="conveyor-bench-events-"))
    embedded = EmbeddedPostgres(root / "pg")
    admin_url = await asyncio.to_thread(embedded.start)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute("CREATE DATABASE bench_events")
    url = make_conninfo(admin_url, dbname="bench_events")
    settings = Settings(
        data_dir=root / "data",
        grpc_address="127.0.0.1:0",
        http_address="127.0.0.1:0",
        database_url=url,
        log_level="warning",
    )
    server = ConveyorServer(settings, default_hooks())
    await server.start()
    if idle_read_interval is not None:
        hub = next(loop for loop in server.context.loops if isinstance(loop, EventHub))
        hub.idle_read_interval = idle_read_interval
    results: dict[str, Any] = {}
    try:
        target = server.grpc_target
        admin_key = (settings.data_dir / "admin.key").read_text().strip()
        async with AsyncClient(target, api_key=admin_key) as admin:
            await admin.create_project(PROJECT)
            key = (await admin.create_api_key(PARENT, enums_pb2.ROLE_OPERATOR)).secret
            # The load both enqueues and leases: a project admin may do both.
            load_key = (await admin.create_api_key(PARENT, enums_pb2.ROLE_ADMIN)).secret
            async with AsyncClient(target, api_key=key, project=PROJECT) as client:
                await client.create_task("bench.seed", queue="seed")  # a snapshot to copy

        if "stream" in only:
            await _streaming(results, url, embedded.pgdata, target, key, load_key, seconds, rate)
        if "idle" in only:
            await _idle(results, target, key, seconds, rounds)
    finally:
        await server.stop(grace=1)
        await asyncio.to_thread(embedded.stop)
        shutil.rmtree(root, ignore_errors=True)
    return results


async def _streaming(
    results: dict[str, Any],
    url: str,
    pgdata: Path,
    target: str,
    key: str,
    load_key: str,
    seconds: float,
    rate: float,
) -> None:
    """A backlog replayed with no load (the ceiling), then live events while tasks run
    and SQL appends events at `rate`."""
    import psycopg

    backlog = 30_000
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT to_jsonb(t) FROM tasks t LIMIT 1").fetchone()
        assert row is not None
        for _ in range(backlog // 1000):
            conn.execute(
                "INSERT INTO events (project, type, subject, task) "
                "SELECT %s, 'task.started', 'projects/bench/tasks/x', %s::jsonb "
                "FROM generate_series(1, 1000)",
                (PROJECT, json.dumps(row[0])),
            )
    cpu, pg_cpu = time.process_time(), _postgres_cpu(pgdata)
    replay = await spawn(
        "subscriber", target, key, "--after", "1", "--expect", str(backlog),
        "--seconds", "120",
    )  # fmt: skip
    await replay.line()  # subscribed
    results["replay"] = await replay.finish()
    results["replay"]["server_cpu"] = time.process_time() - cpu
    results["replay"]["postgres_cpu"] = _postgres_cpu(pgdata) - pg_cpu

    live = await spawn("subscriber", target, key, "--seconds", str(seconds))
    await live.line()  # subscribed
    cpu, pg_cpu, started = time.process_time(), _postgres_cpu(pgdata), time.monotonic()
    load = await spawn(
        "load", target, load_key, "--database-url", url,
        "--seconds", str(seconds + 2), "--rate", str(rate),
    )  # fmt: skip
    results["live"] = await live.finish()
    results["load"] = await load.finish()
    results["live"]["server_cpu"] = time.process_time() - cpu
    results["live"]["postgres_cpu"] = _postgres_cpu(pgdata) - pg_cpu
    results["live"]["wall"] = time.monotonic() - started


async def _idle(
    results: dict[str, Any], target: str, key: str, seconds: float, rounds: int
) -> None:
    """The enqueue path without and with 500 idle subscribers, in alternating rounds so
    that drift (other work on the machine) hits every variant alike."""
    enqueue_args = ("--seconds", str(seconds), "--concurrency", "32")
    for variant in ("baseline", "distinct", "shared") * rounds:
        idle = None
        if variant != "baseline":
            extra = ["--distinct"] if variant == "distinct" else []
            idle = await spawn("idle", target, key, "--count", "500", *extra)
            assert (await idle.line())["ready"] == 500
        cpu = time.process_time()
        outcome = await (await spawn("enqueue", target, key, *enqueue_args)).finish()
        outcome["server_cpu"] = time.process_time() - cpu
        results.setdefault(f"enqueue_{variant}", []).append(outcome)
        if idle is not None:
            assert idle.process.stdin is not None
            idle.process.stdin.close()
            await idle.finish()


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def report(results: dict[str, Any]) -> None:
    if "replay" in results:
        report_streaming(results)
    if "enqueue_baseline" in results:
        report_idle(results)


def report_streaming(results: dict[str, Any]) -> None:
    replay = results["replay"]["rate"]
    live = results["live"]["rate"]
    load = results["load"]
    print("Event streams, one replica (2 cores shared with PostgreSQL and the load):")
    print(
        f"  backlog replay, no load:   {replay:8.0f} events/s  "
        f"({replay / 5000:.2f}x the 5,000/s target; "
        f"server CPU {results['replay']['server_cpu'] / results['replay']['events'] * 1e6:.0f}"
        " us/event)"
    )
    print(
        f"  live, tasks running:       {live:8.0f} events/s  "
        f"({live / 5000:.2f}x the target, {live / replay:.2f}x replay)"
    )
    print(
        f"    load: {load['created']} tasks created, {load['completed']} completed, "
        f"{load['inserted']} events appended by SQL; "
        f"the subscriber reconnected {results['live']['reconnects']} times"
    )
    live_run = results["live"]
    if "wall" in live_run:
        wall = live_run["wall"]
        server = live_run["server_cpu"] / wall
        print(
            f"    cores busy while live ({wall:.1f} s): server {server:.2f}, "
            f"PostgreSQL {live_run['postgres_cpu'] / wall:.2f}, "
            f"load process {load.get('cpu', 0) / wall:.2f}, "
            f"subscriber {live_run.get('cpu', 0) / wall:.2f} (children: whole life)"
        )


def report_idle(results: dict[str, Any]) -> None:
    base = _median([r["rate"] for r in results["enqueue_baseline"]])
    base_cpu = _median([r["server_cpu"] / r["created"] * 1e6 for r in results["enqueue_baseline"]])
    rounds = len(results["enqueue_baseline"])
    print(f"CreateTask throughput, 32 concurrent callers (median of {rounds} rounds):")
    for variant, label in (
        ("baseline", "no subscribers"),
        ("distinct", "500 idle, 500 filters"),
        ("shared", "500 idle, one filter"),
    ):
        runs = results[f"enqueue_{variant}"]
        rate = _median([r["rate"] for r in runs])
        cpu = _median([r["server_cpu"] / r["created"] * 1e6 for r in runs])
        each = ", ".join(f"{r['rate']:.0f}" for r in runs)
        print(
            f"  {label:24s} {rate:6.0f} tasks/s  ({rate / base:.3f}x baseline; "
            f"cost {1 - rate / base:+.1%}; rounds: {each})"
        )
        print(
            f"  {'':24s} server CPU {cpu:6.0f} us/task  ({cpu / base_cpu:.3f}x baseline; "
            f"cost {cpu / base_cpu - 1:+.1%})"
        )


def main() -> None:
    if "--role" in sys.argv:
        child_main(sys.argv[1:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=6000, help="events/s appended by SQL")
    parser.add_argument("--rounds", type=int, default=3, help="enqueue rounds per variant")
    parser.add_argument(
        "--only",
        default="stream,idle",
        help="comma-separated parts to run: stream (figure 1), idle (figure 2)",
    )
    parser.add_argument(
        "--idle-read-interval",
        type=float,
        default=None,
        help="seconds between a tail's reads while they hand nothing over (default: the "
        "server's; 0 reads after every notification burst, as before it existed)",
    )
    parser.add_argument("--json", action="store_true", help="print the raw results too")
    args = parser.parse_args()
    only = {part.strip() for part in args.only.split(",") if part.strip()}
    if not only or only - {"stream", "idle"}:
        parser.error("--only takes stream, idle or both")
    results = asyncio.run(run(args.seconds, args.rate, args.rounds, only, args.idle_read_interval))
    if args.json:
        print(json.dumps(results, indent=2))
    report(results)


if __name__ == "__main__":
    main()
