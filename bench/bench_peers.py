"""The peers, measured in the same run and on the same PostgreSQL as the service.

- pgqueuer (the `bench` extra), driven as its documentation shows: `Queries.enqueue` one
  job per call on one connection, `enqueue` with lists of 1000, and a `QueueManager`
  draining with `batch_size=10` (handlers return at once).
- procrastinate (the `bench` extra): `defer_async` one job per call, its documented way
  to enqueue (its worker needs a process model of its own; not driven here).
- the yardstick: ../shared/yardstick/strawman.py, run from where it lives (never copied)
  with this run's PostgreSQL; its JSON lines are read back.

Each returns a dict of figures (rates per second; latencies in ms) that bench_queue.py
prints beside the service's and turns into the issue's PASS/MISS targets.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def yardstick_path() -> Path | None:
    """strawman.py: $CONVEYOR_YARDSTICK, else shared/yardstick beside an ancestor of this repo."""
    given = os.environ.get("CONVEYOR_YARDSTICK")
    if given:
        return Path(given)
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "shared" / "yardstick" / "strawman.py"
        if candidate.exists():
            return candidate
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def yardstick(url: str, seconds: float) -> dict[str, float]:
    """One rep of the yardstick on `url`; {test: value} (jobs/s, or ms for latency)."""
    path = yardstick_path()
    if path is None:
        return {}
    argv = [sys.executable, str(path), "--uri", url, "--reps", "1", "--duration", str(seconds)]
    argv += ["--port", str(_free_port())]
    done = subprocess.run(
        argv, cwd=path.parent, capture_output=True, text=True, timeout=600, check=False
    )
    figures: dict[str, float] = {}
    for line in done.stdout.splitlines():
        if line.startswith("{"):
            row = json.loads(line)
            figures[row["test"]] = float(row["value"])
    if not figures:
        print(f"yardstick failed ({done.returncode}): {done.stderr[-2000:]}", file=sys.stderr)
    return figures


async def pgqueuer_figures(url: str, seconds: float) -> dict[str, float]:
    try:
        import psycopg
        from pgqueuer.db import PsycopgDriver
        from pgqueuer.qm import QueueManager
        from pgqueuer.queries import Queries
        from pgqueuer.types import QueueExecutionMode
    except ImportError:
        return {}
    figures: dict[str, float] = {}
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        queries = Queries(PsycopgDriver(conn))
        if not await queries.schema_is_installed():
            await queries.install()
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            await queries.enqueue("bench", b"x")
            count += 1
        figures["enqueue_1"] = count / (time.perf_counter() - start)
        batches, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            await queries.enqueue(["bench"] * 1000, [b"x"] * 1000, [0] * 1000)
            batches += 1
        figures["enqueue_1000"] = batches * 1000 / (time.perf_counter() - start)

    # The drain, on connections of its own (the manager holds one for LISTEN).
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        manager = QueueManager(Queries(PsycopgDriver(conn)))
        done = 0
        first = 0.0

        @manager.entrypoint("bench")
        async def job(_job: Any) -> None:
            nonlocal done, first
            # Counted from the first job: the manager's start-up is not the drain.
            if not done:
                first = time.perf_counter()
            done += 1

        async def stop_later() -> None:
            await asyncio.sleep(seconds)
            manager.shutdown.set()

        stopper = asyncio.create_task(stop_later())
        await manager.run(batch_size=10, mode=QueueExecutionMode.drain)
        if done > 1:
            figures["drain_10"] = (done - 1) / (time.perf_counter() - first)
        stopper.cancel()
    return figures


async def procrastinate_figures(url: str, seconds: float) -> dict[str, float]:
    try:
        import procrastinate
    except ImportError:
        return {}
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=url))

    @app.task(name="bench", queue="bench")
    async def bench_task() -> None:
        return None

    async with app.open_async():
        # Applying the schema again (a second run on one database) fails: that is fine.
        with contextlib.suppress(Exception):
            await app.schema_manager.apply_schema_async()
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            await bench_task.defer_async()
            count += 1
        return {"enqueue_1": count / (time.perf_counter() - start)}
