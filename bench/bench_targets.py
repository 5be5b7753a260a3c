"""Issue 17's figures: the batched stream, the peers beside the service, PASS/MISS.

The targets (issue 17; to be judged on a quiet 2-core machine, median of 3 runs):
- CreateTask, 16 in flight: >= 1.2x pgqueuer's one-at-a-time enqueue, >= 1.5x the
  yardstick's single enqueue, >= 0.45x the raw 8-connection inserts; server CPU <= 250 us.
- BatchCreateTasks of 1000: >= 0.6x raw COPY and >= 0.5x pgqueuer's batch enqueue.
- SDK Worker drain, concurrency 100: >= 1.5x pgqueuer's drain and >= 0.5x the raw N=100
  loop; a bare batched Connect stream (credit 100) >= 0.4x the yardstick's 4-worker N=100
  loop; server CPU <= 60 us per task.
- SDK Worker, concurrency 1: >= 0.6x the raw N=1 loop.
- Enqueue to handler start: p50 <= the yardstick's enqueue-to-worker p50; p99 <= 10 ms.
- Scale (`--scale`, bench_scale.py): the drain and the enqueue-to-start p50 on a project
  with 1M finished and 100k queued tasks within 1.25x of the same on the empty table.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

import bench_scale

PARENT = "projects/bench"


async def svc_stream_batched(client: Any, queue: str, credit: int, seconds: float) -> float:
    """A bare batched Connect stream: each LeaseBatch answered by one ReportBatch."""
    import grpc

    from conveyor.v1 import worker_pb2

    outbox: asyncio.Queue[worker_pb2.ConnectRequest | None] = asyncio.Queue()
    hello = worker_pb2.Hello(
        parent=PARENT, worker=f"batched-{queue}", queues=[queue], capacity=credit, batches=True
    )
    await outbox.put(worker_pb2.ConnectRequest(hello=hello))
    await outbox.put(worker_pb2.ConnectRequest(credit=worker_pb2.Credit(tasks=credit)))

    async def requests() -> Any:
        while (message := await outbox.get()) is not None:
            yield message

    call = client.workers.Connect(requests())
    done = 0
    started = 0.0
    deadline = float("inf")
    while True:
        # A queue drained before the deadline sends nothing more: stop there instead of
        # waiting on the stream (which once sat idle for minutes and was then closed
        # by the server's ping policy).
        wait = 30.0 if not started else max(deadline - time.monotonic(), 0.0) + 0.5
        try:
            response = await asyncio.wait_for(call.read(), timeout=wait)
        except TimeoutError:
            break
        if response is grpc.aio.EOF:
            break
        which = response.WhichOneof("message")
        if which == "assignments":
            completes = [
                worker_pb2.CompleteTaskRequest(name=lease.task.name, lease_id=lease.lease_id)
                for lease in response.assignments.leases
            ]
            batch = worker_pb2.ReportBatch(completes=completes)
            outbox.put_nowait(worker_pb2.ConnectRequest(reports=batch))
        elif which == "report_acks":
            if not started:
                started = time.monotonic()
                deadline = started + seconds
            else:
                done += len(response.report_acks.acks)
            if time.monotonic() >= deadline:
                break
    elapsed = time.monotonic() - started
    await outbox.put(None)
    call.cancel()
    return done / elapsed


def _rate(results: dict[str, Any], name: str) -> float | None:
    entry = results.get(name)
    if isinstance(entry, dict):
        return float(entry["rate"])
    return float(entry) if entry is not None else None


def _cpu(results: dict[str, Any], name: str) -> float | None:
    entry = results.get(name)
    if isinstance(entry, dict) and "server_cpu_us_per_task" in entry:
        return float(entry["server_cpu_us_per_task"])
    return None


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def report(results: dict[str, Any]) -> bool:
    """Prints the peers and issue 17's targets; True when every measured one passed."""
    pgq = results.get("pgqueuer", {})
    proc = results.get("procrastinate", {})
    yard = results.get("yardstick", {})
    print("Peers (same run, same PostgreSQL):")
    for label, value, unit in (
        ("pgqueuer enqueue, one per call", pgq.get("enqueue_1"), "jobs/s"),
        ("pgqueuer enqueue, 1000 per call", pgq.get("enqueue_1000"), "jobs/s"),
        ("pgqueuer drain, batch 10", pgq.get("drain_10"), "jobs/s"),
        ("procrastinate defer, one per call", proc.get("enqueue_1"), "jobs/s"),
        ("yardstick enqueue, 16 in flight", yard.get("svc_enqueue_single_c16"), "jobs/s"),
        ("yardstick enqueue, 1000 per call", yard.get("svc_enqueue_batch1000_c2"), "jobs/s"),
        ("yardstick 4 workers, N=100", yard.get("svc_lease_complete_N100_w4"), "jobs/s"),
        ("yardstick enqueue->worker p50", yard.get("svc_e2e_latency_p50"), "ms"),
        ("yardstick enqueue->worker p99", yard.get("svc_e2e_latency_p99"), "ms"),
    ):
        if value is not None:
            print(f"  {label:38s} {value:10.1f} {unit}")
    batched = _rate(results, "svc_stream_batched_100")
    if batched is not None:
        entry = results["svc_stream_batched_100"]
        print(
            f"  {'(service) batched stream, credit 100':38s} {batched:10.1f} tasks/s"
            f"  [{entry.get('server_cpu_us_per_task', 0):.0f} us server CPU]"
        )

    print("Targets (issue 17):")
    ok = True

    def check(label: str, got: float | None, base: float | None, target: float) -> None:
        nonlocal ok
        if got is None or not base:
            print(f"  {label:52s}   not measured")
            return
        passed = got / base >= target
        ok &= passed
        verdict = "PASS" if passed else "MISS"
        print(f"  {label:52s} {got / base:6.2f}x (>= {target:.2f}x) {verdict}")

    def ceiling(label: str, got: float | None, limit: float, unit: str) -> None:
        nonlocal ok
        if got is None:
            print(f"  {label:52s}   not measured")
            return
        passed = got <= limit
        ok &= passed
        verdict = "PASS" if passed else "MISS"
        print(f"  {label:52s} {got:6.1f} {unit} (<= {limit:g}) {verdict}")

    create, batch = _rate(results, "svc_create_16"), _rate(results, "svc_batch_1000")
    check("CreateTask x16 / pgqueuer enqueue 1", create, pgq.get("enqueue_1"), 1.2)
    check("CreateTask x16 / yardstick enqueue x16", create, yard.get("svc_enqueue_single_c16"), 1.5)
    check("CreateTask x16 / raw 8-conn INSERT", create, _rate(results, "raw_insert_8"), 0.45)
    ceiling("CreateTask server CPU per task", _cpu(results, "svc_create_16"), 250, "us")
    check("BatchCreateTasks 1000 / raw COPY", batch, _rate(results, "raw_copy_1000"), 0.6)
    check("BatchCreateTasks 1000 / pgqueuer 1000", batch, pgq.get("enqueue_1000"), 0.5)
    sdk100 = _rate(results, "svc_sdk_100")
    check("SDK Worker c100 / pgqueuer drain (batch 10)", sdk100, pgq.get("drain_10"), 1.5)
    check("SDK Worker c100 / raw N=100 loop", sdk100, _rate(results, "raw_lease_100"), 0.5)
    check(
        "batched stream c100 / yardstick 4x N=100",
        batched,
        yard.get("svc_lease_complete_N100_w4"),
        0.4,
    )
    ceiling("SDK Worker c100 server CPU per task", _cpu(results, "svc_sdk_100"), 60, "us")
    sdk1, raw1 = _rate(results, "svc_sdk_1"), _rate(results, "raw_lease_1")
    check("SDK Worker c1 / raw N=1 loop", sdk1, raw1, 0.6)
    latency = results.get("svc_latency")
    yard_p50 = yard.get("svc_e2e_latency_p50")
    if latency and yard_p50:
        p50 = _pct(latency, 0.5) * 1e3
        ceiling("enqueue->start p50 (ms) vs yardstick p50", p50, round(yard_p50, 2), "ms")
    if latency:
        ceiling("enqueue->start p99", _pct(latency, 0.99) * 1e3, 10, "ms")
        print(f"  {'(enqueue->start median)':52s} {statistics.median(latency) * 1e3:6.2f} ms")
    ok &= bench_scale.report(results, _pct)
    return ok
