"""Issue 19 point 2's bench case: one worker logging 1,000 lines/s must not slow the
queue's lease path by more than 10%.

Run by bench/bench_queue.py (`--only logs`, or with everything):

    .venv/bin/python bench/bench_queue.py --quick --only logs

The lease path is the SDK Worker completing no-op tasks one at a time (concurrency 1:
every lease and report waits on the database, so it feels any extra load there first).
It is measured twice on the same server, first alone, then while another worker, in its
own process (so its client-side work does not share this one's CPU), runs one task that
logs LOG_RATE lines a second with ctx.log. The case passes when the second rate is at
least 0.9x the first. The achieved logging rate is read back from the task's last seq.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

LOG_RATE = 1000
"""Lines per second the logging worker writes."""
TARGET = 0.9
"""The lease path with the logger running, as a share of the lease path alone."""


def logger_main(target: str, key: str, project: str, queue: str, rate: int) -> None:
    """The logging worker's process: runs the one task of `queue`, logging `rate`
    lines a second with ctx.log, until it is terminated."""
    from conveyor.client import AsyncClient, TaskContext, Worker

    async def main() -> None:
        async with AsyncClient(target, api_key=key, project=project) as client:
            worker = Worker(client, queues=[queue], worker_id="bench-logger")

            @worker.task("bench.logger")
            async def logger(ctx: TaskContext) -> None:
                sent, started = 0, time.monotonic()
                while True:
                    due = int((time.monotonic() - started) * rate)
                    while sent < due:
                        ctx.log(f"processed row {sent}", row=sent, table="bench")
                        sent += 1
                    await asyncio.sleep(0.01)

            await worker.arun()

    asyncio.run(main())


async def measure_logs(
    client: Any,
    target: str,
    key: str,
    project: str,
    seconds: float,
    fill: Callable[[Any, str, int], Awaitable[None]],
    lease_path: Callable[[Any, str, int, float], Awaitable[float]],
) -> dict[str, float]:
    """{alone, with_logger: tasks/s of the lease path; log_rate: lines/s achieved}."""
    count = int(max(2000, 1000 * seconds))
    await fill(client, "logs-alone", count)
    alone = await lease_path(client, "logs-alone", 1, seconds)

    task = await client.create_task("bench.logger", queue="logs-logger")
    process = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--logger", target, key, project, "logs-logger", str(LOG_RATE)
    )
    try:
        # Measure once lines arrive: the logger is connected and writing.
        deadline = time.monotonic() + 60
        while not await _last_seq(client, task.name):
            if time.monotonic() > deadline or process.returncode is not None:
                raise RuntimeError("the logging worker wrote nothing")
            await asyncio.sleep(0.1)
        first = await _last_seq(client, task.name)
        started = time.monotonic()
        await fill(client, "logs-with", count)
        with_logger = await lease_path(client, "logs-with", 1, seconds)
        log_rate = (await _last_seq(client, task.name) - first) / (time.monotonic() - started)
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 15)
    return {"alone": alone, "with_logger": with_logger, "log_rate": log_rate}


async def _last_seq(client: Any, name: str) -> int:
    async for line in client.list_task_logs(name, page_size=1, newest_first=True):
        return int(line.seq)
    return 0


def report(results: dict[str, Any]) -> bool:
    """Prints the case; True when it passed (or was not measured)."""
    figures = results.get("logs")
    print("Target (issue 19 point 2, task logs):")
    label = f"lease path with a {LOG_RATE} lines/s logger / alone"
    if not figures:
        print(f"  {label:52s}   not measured")
        return True
    ratio = figures["with_logger"] / figures["alone"] if figures["alone"] else 0.0
    passed = ratio >= TARGET
    verdict = "PASS" if passed else "MISS"
    print(f"  {label:52s} {ratio:6.2f}x (>= {TARGET:.2f}x) {verdict}")
    print(
        f"  {'(SDK Worker c1 alone / with the logger)':52s} {figures['alone']:6.1f} /"
        f" {figures['with_logger']:.1f} tasks/s, {figures['log_rate']:.0f} lines/s logged"
    )
    return passed


if __name__ == "__main__":
    if len(sys.argv) == 7 and sys.argv[1] == "--logger":
        logger_main(*sys.argv[2:6], int(sys.argv[6]))
    else:
        sys.exit("bench_logs.py is run by bench_queue.py (--only logs)")
