"""Issue 19 point 2's bench case: one worker logging 1,000 lines/s must not slow the
queue's lease path by more than 10%.

Run by bench/bench_queue.py (`--only logs`, or with everything):

    .venv/bin/python bench/bench_queue.py --quick --only logs

The lease path is the SDK Worker completing no-op tasks one at a time (concurrency 1:
every lease and report waits on the database, so it feels any extra load there first).
The SDK Worker at concurrency 1 moves by a third from one run to the next, as much as
the effect measured, so one run alternates the two conditions instead of measuring each
once: the measured worker runs throughout, and another worker, in its own process (so
neither its client-side work nor its event loop is shared with the measured one), runs
one task that logs LOG_RATE lines a second with ctx.log while told to (SIGUSR1) and
nothing while paused (SIGUSR2). After a warm-up of both, PAIRS pairs of phases follow,
alone then logging, and one more alone, each `seconds` long and measured from SETTLE
after the switch; the case compares the median rate of the logging phases with the
median of the alone ones (target >= 0.9x) and prints every phase, and beside it the
median of each logging phase against the two alone ones around it (a drift check).
The logged rate is read back from the task's last seq, so it is what the server stored;
the default bound (10,000 lines per attempt) drops old lines all along (the logger
first writes that many at once).

Before the lease path starts, the logger alone gives the cost of logging itself: server
CPU, PostgreSQL CPU (every process of the embedded cluster) and the logging worker's own
CPU (the SDK's side) per 1,000 lines, from a paused phase and a logging phase of the
same length (and the statements of the logging phase with --statements).
"""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

LOG_RATE = 1000
"""Lines per second the logging worker writes."""
TARGET = 0.9
"""The lease path with the logger running, as a share of the lease path alone."""
PAIRS = 5
"""Alone/logging phase pairs measured in one run."""
SETTLE = 1.0
"""Seconds after the logger is resumed or paused before a phase's measure starts: the SDK
ships a task's lines every 0.5 s, so its last lines arrive up to that long after a pause."""
DRAIN_GUESS = 800
"""Tasks/s the queue is filled for: above any c1 rate seen, so it never runs dry."""
COST_SECONDS = 5.0
"""Least length of each phase of the logging-alone cost."""
PREFILL = 10_000
"""Lines logged before anything is measured: the default bound of an attempt's log."""
CLK_TCK = os.sysconf("SC_CLK_TCK")


def logger_main(target: str, key: str, project: str, queue: str, rate: int) -> None:
    """The logging worker's process: runs the one task of `queue`; prints "ready" once
    the handler runs, then logs `rate` lines a second with ctx.log from SIGUSR1 until
    SIGUSR2 (and again on the next SIGUSR1), until it is terminated. Before "ready" it
    logs PREFILL lines at once, so the log is at its bound when the measures start."""
    from conveyor.client import AsyncClient, TaskContext, Worker

    async def main() -> None:
        loop = asyncio.get_running_loop()
        logging = asyncio.Event()
        loop.add_signal_handler(signal.SIGUSR1, logging.set)
        loop.add_signal_handler(signal.SIGUSR2, logging.clear)
        async with AsyncClient(target, api_key=key, project=project) as client:
            worker = Worker(client, queues=[queue], worker_id="bench-logger")

            @worker.task("bench.logger")
            async def logger(ctx: TaskContext) -> None:
                # The attempt's log at its bound first, so every phase drops old lines.
                for row in range(PREFILL):
                    ctx.log(f"processed row {row}", row=row, table="bench")
                    if row % 1000 == 999:
                        await asyncio.sleep(0.05)
                print("ready", flush=True)
                row = PREFILL
                while True:
                    await logging.wait()
                    # Paced from each resume, so a pause is not made up for in a burst.
                    sent, started = 0, time.monotonic()
                    while logging.is_set():
                        due = int((time.monotonic() - started) * rate)
                        while sent < due:
                            ctx.log(f"processed row {row}", row=row, table="bench")
                            sent += 1
                            row += 1
                        await asyncio.sleep(0.01)

            await worker.arun()

    asyncio.run(main())


def process_cpu(pid: int) -> float:
    """CPU seconds of one process."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def postgres_cpu(pgdata: Path) -> float:
    """CPU seconds of the embedded cluster: the postmaster and every child of it (the
    server's pooled backends live as long as the run, so none is lost by exiting)."""
    postmaster = int((pgdata / "postmaster.pid").read_text().split()[0])
    total = 0.0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry.name) == postmaster or int(fields[1]) == postmaster:
            total += (int(fields[11]) + int(fields[12])) / CLK_TCK
    return total


class _Clocks:
    """Wall time, server CPU, PostgreSQL CPU, tasks done and the logger's last seq, read
    together at each phase boundary."""

    def __init__(self, server_cpu: Callable[[], float], pgdata: Path | None) -> None:
        self._server_cpu = server_cpu
        self._pgdata = pgdata

    def read(self, done: int, seq: int) -> dict[str, float]:
        return {
            "wall": time.monotonic(),
            "server": self._server_cpu(),
            "pg": postgres_cpu(self._pgdata) if self._pgdata is not None else 0.0,
            "done": done,
            "seq": seq,
        }


def _phase(start: dict[str, float], end: dict[str, float]) -> dict[str, float]:
    wall = end["wall"] - start["wall"]
    return {
        "rate": (end["done"] - start["done"]) / wall,
        "lines": (end["seq"] - start["seq"]) / wall,
        "server_cpu": (end["server"] - start["server"]) / wall,
        "pg_cpu": (end["pg"] - start["pg"]) / wall,
    }


async def measure_logs(
    client: Any,
    target: str,
    key: str,
    project: str,
    seconds: float,
    fill: Callable[[Any, str, int], Awaitable[None]],
    *,
    server_cpu: Callable[[], float],
    pgdata: Path | None = None,
    statements: Callable[[str, float], None] | None = None,
) -> dict[str, Any]:
    """{alone, with_logger: median tasks/s of the phases; log_rate: mean lines/s of
    the logging phases; phases: every phase's figures; cost: logging alone}.

    `statements(figure, lines)`, when given, prints the statements since the last call
    (and is called once before the logger-only phase to start counting)."""
    from conveyor.client import Worker

    clocks = _Clocks(server_cpu, pgdata)
    task = await client.create_task("bench.logger", queue="logs-logger")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--logger",
        target,
        key,
        project,
        "logs-logger",
        str(LOG_RATE),
        stdout=asyncio.subprocess.PIPE,
    )
    worker: Any = None
    running: asyncio.Task[None] | None = None
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 60)
        if line.strip() != b"ready":
            raise RuntimeError("the logging worker did not start its task")
        deadline = time.monotonic() + 60
        while await _last_seq(client, task.name) < PREFILL:
            if time.monotonic() > deadline:
                raise RuntimeError("the logging worker's first lines did not arrive")
            await asyncio.sleep(0.2)

        async def seq() -> int:
            return await _last_seq(client, task.name)

        async def switch(on: bool) -> None:
            process.send_signal(signal.SIGUSR1 if on else signal.SIGUSR2)
            await asyncio.sleep(SETTLE)

        # The cost of logging alone: the same span paused, then logging (2 s phases on
        # a busy machine left the PostgreSQL figure within its noise).
        span = max(seconds, COST_SECONDS)
        await asyncio.sleep(SETTLE)
        mark, own = clocks.read(0, await seq()), process_cpu(process.pid)
        await asyncio.sleep(span)
        idle = _phase(mark, clocks.read(0, await seq()))
        idle["logger_cpu"] = (process_cpu(process.pid) - own) / span
        await switch(True)
        if statements is not None:
            statements("", 0)
        mark, own = clocks.read(0, await seq()), process_cpu(process.pid)
        await asyncio.sleep(span)
        busy = _phase(mark, clocks.read(0, await seq()))
        busy["logger_cpu"] = (process_cpu(process.pid) - own) / span
        if statements is not None:
            statements("logs (1,000 lines/s, no lease path)", busy["lines"] * span)
        await switch(False)
        per_k = 1000 / busy["lines"] if busy["lines"] else 0.0
        cost = {
            "lines": busy["lines"],
            "server_ms_per_k": (busy["server_cpu"] - idle["server_cpu"]) * per_k * 1000,
            "pg_ms_per_k": (busy["pg_cpu"] - idle["pg_cpu"]) * per_k * 1000,
            "logger_ms_per_k": (busy["logger_cpu"] - idle["logger_cpu"]) * per_k * 1000,
        }

        # The lease path, one worker running throughout: warm up, then the pairs.
        filled = int(DRAIN_GUESS * (2 + (2 * PAIRS + 1) * (seconds + SETTLE) + 2 * seconds))
        await fill(client, "logs-lease", filled)
        worker = Worker(client, queues=["logs-lease"], concurrency=1, worker_id="bench-lease")
        done = 0
        first = asyncio.Event()

        @worker.task("bench.noop")
        async def noop(ctx: Any) -> dict[str, Any]:
            nonlocal done
            done += 1
            first.set()
            return {"ok": True}

        running = asyncio.create_task(worker.arun())
        await first.wait()
        await asyncio.sleep(seconds)
        await switch(True)
        await asyncio.sleep(seconds)
        phases: list[dict[str, Any]] = []
        # Alone, logging, ..., alone: every logging phase between two alone ones.
        for logging in [False, True] * PAIRS + [False]:
            await switch(logging)
            mark = clocks.read(done, await seq())
            await asyncio.sleep(seconds)
            phases.append({"logging": logging, **_phase(mark, clocks.read(done, await seq()))})
        if done >= filled:
            raise RuntimeError("the lease path ran out of tasks; raise DRAIN_GUESS")
    finally:
        if worker is not None:
            await worker.stop(grace=5)
        if running is not None:
            running.cancel()
        process.terminate()
        await asyncio.wait_for(process.wait(), 15)
    alone = [p["rate"] for p in phases if not p["logging"]]
    with_logger = [p["rate"] for p in phases if p["logging"]]
    # A drift check beside the verdict: each logging phase against the mean of the alone
    # phases either side of it, which a steady rise or fall of the rate cancels out.
    bracketed = [
        phases[i]["rate"] * 2 / (phases[i - 1]["rate"] + phases[i + 1]["rate"])
        for i in range(1, len(phases) - 1, 2)
    ]
    return {
        "alone": statistics.median(alone),
        "with_logger": statistics.median(with_logger),
        "bracketed": statistics.median(bracketed),
        # The mean, not the median: lines arrive 500 at a time, so one phase's figure
        # is off by up to a shipment; the phases are equally long.
        "log_rate": statistics.mean(p["lines"] for p in phases if p["logging"]),
        "phases": phases,
        "cost": cost,
    }


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
        f"  {'(SDK Worker c1, median of the phases alone / logging)':52s}"
        f" {figures['alone']:6.1f} / {figures['with_logger']:.1f} tasks/s,"
        f" {figures['log_rate']:.0f} lines/s logged"
    )
    if "bracketed" in figures:
        print(
            f"  {'(median of each logging phase / its two alone ones)':52s}"
            f" {figures['bracketed']:6.2f}x"
        )
    for i, phase in enumerate(figures.get("phases", ())):
        name = "logging" if phase["logging"] else "alone"
        print(
            f"    phase {i + 1:2d} {name:8s} {phase['rate']:7.1f} tasks/s"
            f" {phase['lines']:6.0f} lines/s; cores busy: server {phase['server_cpu']:.2f},"
            f" postgres {phase['pg_cpu']:.2f}"
        )
    cost = figures.get("cost")
    if cost:
        print(
            f"  {'logging alone, CPU per 1,000 lines':52s} server {cost['server_ms_per_k']:.1f} ms,"
            f" postgres {cost['pg_ms_per_k']:.1f} ms, the logging worker"
            f" {cost['logger_ms_per_k']:.1f} ms ({cost['lines']:.0f} lines/s)"
        )
    return passed


if __name__ == "__main__":
    if len(sys.argv) == 7 and sys.argv[1] == "--logger":
        logger_main(*sys.argv[2:6], int(sys.argv[6]))
    else:
        sys.exit("bench_logs.py is run by bench_queue.py (--only logs)")
