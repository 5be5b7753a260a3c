"""A worker process for the drills: `python -m drillkit.effect_worker --mode stream ...`.

Every handler run sleeps `--work` seconds (the work), appends its effect to the log and
returns `{"lease_id": ...}`, so the database's result names the lease whose result stood.

- `stream`: the SDK's `Worker` on a Connect stream (heartbeats, reconnects, SIGTERM);
  LeaseBatch and ReportBatch messages unless `--unbatched`. The reports the SDK says were
  refused are appended to `--reports` as `<task_id> - refused`.
- `unary`: `--threads` loops of LeaseTasks (long poll) and CompleteTask, each thread on a
  channel of its own to one of the `--target`s in turn; no heartbeats, so the lease must
  outlast the work. With `--batch N` a thread leases up to N tasks at once and reports
  them in one ReportTasks call. Every report's outcome is appended to `--reports` as
  `<task_id> <lease_id> ok|refused`.

The API key comes from CONVEYOR_API_KEY.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from conveyor.client import (
    Client,
    FailedPreconditionError,
    TaskContext,
    UnavailableError,
    Worker,
)
from conveyor.client.errors import ConveyorError
from conveyor.v1 import task_pb2, worker_pb2
from drillkit.effects import EffectLog

KIND = "drill.effect"
_OUTCOMES = {
    grpc.StatusCode.OK.value[0]: "ok",
    grpc.StatusCode.FAILED_PRECONDITION.value[0]: "refused",
}


def _task_id(name: str) -> str:
    return name.rsplit("/", 1)[-1]


def _parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=["stream", "unary"], default="stream")
    parser.add_argument("--target", action="append", required=True)
    parser.add_argument("--project", default="default")
    parser.add_argument("--queue", default="default")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work", type=float, default=0.005)
    parser.add_argument("--lease-duration", type=float, default=5.0)
    parser.add_argument("--worker-id", required=True)
    parser.add_argument("--effects", type=Path, required=True)
    parser.add_argument("--reports", type=Path)
    parser.add_argument(
        "--batch", type=int, default=1, help="unary: lease up to N, report them in ReportTasks"
    )
    parser.add_argument(
        "--unbatched", action="store_true", help="one stream message per task, not batches"
    )
    return parser.parse_args(argv)


class _RefusalLog(logging.Handler):
    """Appends the SDK's refused reports (it logs them; it has no other way to tell) to
    the reports log as `<task_id> - refused`: the stream form of a unary refusal."""

    def __init__(self, report: Callable[[str, str, str], None]) -> None:
        super().__init__(logging.INFO)
        self._report = report

    def emit(self, record: logging.LogRecord) -> None:
        text = str(record.msg)
        refused = text.startswith("report on %s refused") or (
            text.startswith("report on %s dropped") and "FAILED_PRECONDITION" in str(record.args)
        )
        if refused and isinstance(record.args, tuple) and record.args:
            self._report(_task_id(str(record.args[0])), "-", "refused")


def _reporter(path: Path | None) -> Callable[[str, str, str], None]:
    """Appends `<task_id> <lease_id> <outcome>` lines to `path` (nothing without one)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644) if path else None

    def report(task_id: str, lease_id: str, outcome: str) -> None:
        if fd is not None:
            os.write(fd, f"{task_id} {lease_id} {outcome}\n".encode())

    return report


def _run_stream(args: argparse.Namespace, effects: EffectLog) -> None:
    sdk_log = logging.getLogger("conveyor.worker")
    sdk_log.setLevel(logging.INFO)
    sdk_log.addHandler(_RefusalLog(_reporter(args.reports)))
    client = Client(args.target[0], project=args.project)
    worker = Worker(
        client,
        queues=[args.queue],
        concurrency=args.concurrency,
        worker_id=args.worker_id,
        lease_duration=args.lease_duration,
        shutdown_grace=5.0,
        batches=not args.unbatched,
    )

    @worker.task(KIND)
    def handle(ctx: TaskContext) -> dict[str, Any]:
        begin = time.monotonic_ns()
        time.sleep(args.work)
        effects.append(_task_id(ctx.name), ctx.lease_id, ctx.attempt, begin)
        return {"lease_id": ctx.lease_id}

    worker.run()


def _run_unary(args: argparse.Namespace, effects: EffectLog) -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    report = _reporter(args.reports)

    def loop(index: int) -> None:
        target = args.target[index % len(args.target)]
        worker = f"{args.worker_id}-{index}"
        with Client(target, project=args.project) as client:
            while not stop.is_set():
                try:
                    leases = client.lease_tasks(
                        [args.queue],
                        worker=worker,
                        max_tasks=args.batch,
                        wait_timeout=1.0,
                        lease_duration=args.lease_duration,
                    )
                except ConveyorError:
                    time.sleep(0.2)
                    continue
                for lease in leases:
                    begin = time.monotonic_ns()
                    time.sleep(args.work)
                    task_id = _task_id(lease.task.name)
                    effects.append(task_id, lease.lease_id, lease.task.attempt, begin)
                    if args.batch == 1:
                        _complete(client, lease.task.name, lease.lease_id, report, task_id)
                if args.batch > 1 and leases:
                    _report_batch(client, leases, report)

    threads = [
        threading.Thread(target=loop, args=(index,), daemon=True) for index in range(args.threads)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _report_batch(client: Client, leases: list[task_pb2.Lease], report: Any) -> None:
    """Every lease's completion in one ReportTasks call; each ack says how it went."""
    request = worker_pb2.ReportTasksRequest(parent=f"projects/{client.project}")
    for lease in leases:
        done = request.completes.add(name=lease.task.name, lease_id=lease.lease_id)
        done.result.struct_value.update({"lease_id": lease.lease_id})
    for _ in range(50):
        try:
            answer = client.workers.ReportTasks(request, timeout=30)
        except UnavailableError:
            time.sleep(0.2)
            continue
        except ConveyorError as error:
            for lease in leases:
                report(_task_id(lease.task.name), lease.lease_id, f"error:{error.code().name}")
            return
        for ack in answer.acks:
            report(_task_id(ack.name), ack.lease_id, _OUTCOMES.get(ack.status.code, "error"))
        return


def _complete(client: Client, name: str, lease_id: str, report: Any, task_id: str) -> None:
    # Retried while the server is unreachable: the lease decides, not the network.
    for _ in range(50):
        try:
            client.complete_task(name, lease_id, {"lease_id": lease_id})
        except FailedPreconditionError:
            report(task_id, lease_id, "refused")
            return
        except UnavailableError:
            time.sleep(0.2)
            continue
        except ConveyorError as error:
            report(task_id, lease_id, f"error:{error.code().name}")
            return
        report(task_id, lease_id, "ok")
        return


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    effects = EffectLog(args.effects)
    if args.mode == "stream":
        _run_stream(args, effects)
    else:
        _run_unary(args, effects)


if __name__ == "__main__":
    main()
