"""Flow control on the lease path: lease-and-complete with the controls active (and not
binding) against the same run without them.

    .venv/bin/python bench/bench_flow.py [--quick] [--seconds 4] [--rounds 2] [--warmup 0.5]
                                         [--only sdk1,stream100] [--breakdown] [--json]

Starts its own embedded PostgreSQL and one Conveyor server as a subprocess (the helpers
of bench_queue.py), then, over Connect, drains a queue of ready no-op tasks with the SDK
Worker and with a bare Connect stream, one at a time (concurrency / credit 1) and by
100, on two kinds of queue:

  - plain: no limits; the unlimited lease statement (one statement: report + lease);
  - controlled: the queue has max_concurrency 1000 and rate_limit "100000/s" (far above
    what is reached), every task carries concurrency_key "bench" with concurrency_limit
    10000 and a dedupe key of its own. Nothing binds, but every lease takes the limited
    path (advisory locks, running counts, the token bucket) and every task holds a key.

Plain and controlled alternate (ABBA across rounds, fresh queues each time), so drift in
the machine's load and the growth of the tasks table fall on both; each is first run
unrecorded for `--warmup` seconds per case, so no figure carries first-call costs (the
server's connections compiling the admission function, planning their prepared
statements). The target (issue 4):
the controlled rate >= 0.8x the plain rate, per case, printed PASS or MISS. With
`--breakdown` each control is also measured alone (dedupe keys only; queue limits only;
concurrency key only) to show where the cost is.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import statistics
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import bench_queue
from bench_queue import measure, served, svc_fill, svc_stream, svc_worker

TARGET = 0.8
SIZES = (1, 100)
MODES: dict[str, Callable[[Any, str, int, float], Awaitable[float]]] = {
    "sdk": svc_worker,
    "stream": svc_stream,
}


class Variant:
    """How a queue and its tasks are set up."""

    def __init__(
        self,
        name: str,
        label: str,
        *,
        queue_limits: bool = False,
        key: bool = False,
        dedupe: bool = False,
    ) -> None:
        self.name = name
        self.label = label
        self.queue_limits = queue_limits
        self.key = key
        self.dedupe = dedupe

    async def prepare(self, client: Any, queue: str) -> None:
        if self.queue_limits:
            await client.update_queue(queue, max_concurrency=1000, rate_limit="100000/s")

    def options(self, queue: str) -> Callable[[int], Mapping[str, Any]] | None:
        if not (self.key or self.dedupe):
            return None

        def task_options(i: int) -> dict[str, Any]:
            out: dict[str, Any] = {}
            if self.key:
                out["concurrency_key"] = "bench"
                out["concurrency_limit"] = 10_000
            if self.dedupe:
                out["dedupe_policy"] = {"key": f"{queue}-{i}", "window": 3600}
            return out

        return task_options


PLAIN = Variant("plain", "plain queue")
CONTROLLED = Variant(
    "controlled",
    "all controls, none binding",
    queue_limits=True,
    key=True,
    dedupe=True,
)
BREAKDOWN = (
    Variant("dedupe", "dedupe key per task only", dedupe=True),
    Variant("queue", "queue max_concurrency + rate_limit only", queue_limits=True),
    Variant("key", "concurrency_key only", key=True),
)


def _cases(
    only: str | None,
) -> list[tuple[int, str, Callable[[Any, str, int, float], Awaitable[float]]]]:
    """(size, mode, drain) of every case measured, `--only` applied."""
    return [
        (size, mode, drain)
        for size in SIZES
        for mode, drain in MODES.items()
        if not only or f"{mode}{size}" in only.split(",")
    ]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from conveyor.client import AsyncClient

    seconds = args.seconds
    results: dict[str, Any] = {
        "seconds": seconds,
        "rounds": args.rounds,
        "cores": os.cpu_count(),
        "loadavg_start": os.getloadavg(),
        "runs": [],
    }
    variants = [PLAIN, CONTROLLED, *(BREAKDOWN if args.breakdown else ())]
    # Enough ready tasks that no drain runs dry within `seconds` (as bench_queue fills).
    fill = {1: int(max(2000, 1000 * seconds)), 100: int(max(2000, 1000 * seconds)) * 4}
    async with served("bench_flow") as service:
        service.probe.start()
        async with AsyncClient(
            service.target, api_key=service.key, project=bench_queue.PROJECT
        ) as client:
            # Warm-up, not recorded: each variant's path once on every case, so that no
            # figure carries first-call costs (the server's connections compiling the
            # admission function and planning their prepared statements).
            for size, mode, drain in _cases(args.only):
                for variant in variants:
                    queue = f"{variant.name}-{mode}-{size}-warm"
                    await variant.prepare(client, queue)
                    await svc_fill(client, queue, fill[size] // 4, variant.options(queue))
                    await drain(client, queue, size, args.warmup)
            for round_ in range(args.rounds):
                # ABBA: the plain queue first in even rounds, last in odd ones.
                order = variants if round_ % 2 == 0 else variants[::-1]
                for size, mode, drain in _cases(args.only):
                    for variant in order:
                        queue = f"{variant.name}-{mode}-{size}-r{round_}"
                        await variant.prepare(client, queue)
                        await svc_fill(client, queue, fill[size], variant.options(queue))
                        entry: dict[str, Any] = {}
                        drain_queue = functools.partial(drain, client, queue, size, seconds)
                        await measure(service.probe, entry, "m", drain_queue)
                        results["runs"].append(
                            {
                                "case": f"{mode}{size}",
                                "variant": variant.name,
                                "round": round_,
                                **entry["m"],
                            }
                        )
    results["loadavg_end"] = os.getloadavg()
    return results


def summarise(results: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """(case, variant) -> mean rate and mean server CPU per task over the rounds."""
    grouped: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for run_ in results["runs"]:
        grouped.setdefault((run_["case"], run_["variant"]), []).append(run_)
    return {
        key: {
            "rate": statistics.fmean(r["rate"] for r in runs),
            "cpu_us": statistics.fmean(r.get("server_cpu_us_per_task", 0.0) for r in runs),
            "server_cores": statistics.fmean(r["server_cpu_share"] for r in runs),
            "rates": [r["rate"] for r in runs],
        }
        for key, runs in grouped.items()
    }


CASES = {
    "sdk1": "Connect 1 at a time, SDK Worker",
    "stream1": "Connect 1 at a time, raw stream",
    "sdk100": "Connect by 100, SDK Worker",
    "stream100": "Connect by 100, raw stream",
}


def report(results: dict[str, Any]) -> bool:
    """Prints the figures and the target; True when every measured case passed."""
    summary = summarise(results)
    variants = {v.name: v for v in (PLAIN, CONTROLLED, *BREAKDOWN)}
    load0, load1 = results["loadavg_start"][0], results["loadavg_end"][0]
    print(
        f"Flow control on the lease path, {results['cores']} cores, {results['seconds']:g} s"
        f" per figure, {results['rounds']} round(s); load average {load0:.2f} -> {load1:.2f}"
    )
    for case, label in CASES.items():
        if (case, PLAIN.name) not in summary:
            continue
        print(f"  {label}:")
        for name, variant in variants.items():
            entry = summary.get((case, name))
            if entry is None:
                continue
            rates = ", ".join(f"{r:.0f}" for r in entry["rates"])
            print(
                f"    {variant.label:42s} {entry['rate']:7.0f} tasks/s"
                f"  [{entry['cpu_us']:5.0f} us server CPU/task; server {entry['server_cores']:.2f}"
                f" cores; rounds: {rates}]"
            )
    print(f"Target: controls active (not binding) >= {TARGET:.1f}x the same run without them")
    ok = True
    for case, label in CASES.items():
        plain, controlled = summary.get((case, PLAIN.name)), summary.get((case, CONTROLLED.name))
        if plain is None or controlled is None or not plain["rate"]:
            continue
        ratio = controlled["rate"] / plain["rate"]
        cpu = controlled["cpu_us"] / plain["cpu_us"] if plain["cpu_us"] else 0.0
        passed = ratio >= TARGET
        ok &= passed
        print(
            f"  {label:34s} {ratio:5.2f}x  (>= {TARGET:.2f}x)  {'PASS' if passed else 'MISS'}"
            f"   server CPU per task {cpu:.2f}x"
        )
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs (about a minute)")
    parser.add_argument("--seconds", type=float, default=None, help="seconds per figure")
    parser.add_argument("--rounds", type=int, default=None, help="ABBA rounds (default 2)")
    parser.add_argument(
        "--breakdown", action="store_true", help="also measure each control on its own"
    )
    parser.add_argument(
        "--only", default="", help="comma-separated subset: sdk1,stream1,sdk100,stream100"
    )
    parser.add_argument(
        "--warmup", type=float, default=0.5, help="seconds of unrecorded warm-up per figure"
    )
    parser.add_argument("--json", action="store_true", help="print the raw results too")
    args = parser.parse_args()
    if args.seconds is None:
        args.seconds = 2.0 if args.quick else 5.0
    if args.rounds is None:
        args.rounds = 1 if args.quick else 2
    results = asyncio.run(run(args))
    if args.json:
        print(json.dumps(results, indent=2))
    report(results)


if __name__ == "__main__":
    main()
