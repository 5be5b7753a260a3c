"""`conveyor workers ...`: list, get, and the worker-control commands."""

from __future__ import annotations

from typing import Any

import click

from conveyor.client._requests import duration
from conveyor.client.cli._output import Output
from conveyor.client.cli._params import DURATION
from conveyor.client.cli._progress import finish_command
from conveyor.client.cli._session import session
from conveyor.v1 import command_pb2


@click.group()
def workers() -> None:
    """Connected workers, and the commands that steer them."""


@workers.command(name="list")
def list_() -> None:
    """Every worker with its queues, capacity and last heartbeat."""
    current = session()
    client = current.client()
    Output().many(list(client.list_workers(project=current.resolve_project())), "worker")


@workers.command()
@click.argument("worker")
def get(worker: str) -> None:
    """A worker and its active tasks."""
    current = session()
    Output().one(current.client().get_worker(current.child("workers", worker)))


def _control_options(function: Any) -> Any:
    function = click.option(
        "--wait/--no-wait", default=True, help="follow the command until it settles"
    )(function)
    function = click.option("--idempotency-key", default="")(function)
    return click.option(
        "--timeout", type=DURATION, default=None, help="how long the worker has (default 60s)"
    )(function)


def _issue(method: str, request: Any, wait: bool, timeout: Any = None) -> None:
    current = session()
    client = current.client()
    if timeout is not None:
        request.timeout.CopyFrom(duration(timeout))
    command = getattr(client.commands, method)(request)
    # The worker's own timeout (default 60 s), and some more for the round trips.
    limit = (timeout.total_seconds() if timeout is not None else 60.0) + 30.0
    finish_command(client, command, wait, limit)


def _short(worker: str) -> str:
    return worker.rsplit("/", 1)[-1]


@workers.command()
@click.argument("worker")
@_control_options
def restart(worker: str, timeout: Any, idempotency_key: str, wait: bool) -> None:
    """Ask a worker to restart (it drains, then reconnects)."""
    request = command_pb2.RestartWorkerRequest(
        parent=session().parent(), worker=_short(worker), idempotency_key=idempotency_key
    )
    _issue("RestartWorker", request, wait, timeout)


@workers.command()
@click.argument("worker")
@click.option("--delta", type=int, required=True, help="change of capacity, e.g. 4 or -2")
@_control_options
def resize(worker: str, delta: int, timeout: Any, idempotency_key: str, wait: bool) -> None:
    """Grow or shrink a worker's pool."""
    request = command_pb2.ResizePoolRequest(
        parent=session().parent(),
        worker=_short(worker),
        delta=delta,
        idempotency_key=idempotency_key,
    )
    _issue("ResizePool", request, wait, timeout)


@workers.command()
@click.argument("worker")
@click.argument("queue")
@_control_options
def consume(worker: str, queue: str, timeout: Any, idempotency_key: str, wait: bool) -> None:
    """Make a worker lease from one more queue."""
    request = command_pb2.AddConsumerRequest(
        parent=session().parent(),
        worker=_short(worker),
        queue=queue,
        idempotency_key=idempotency_key,
    )
    _issue("AddConsumer", request, wait, timeout)


@workers.command(name="stop-consuming")
@click.argument("worker")
@click.argument("queue")
@_control_options
def stop_consuming(worker: str, queue: str, timeout: Any, idempotency_key: str, wait: bool) -> None:
    """Make a worker stop leasing from a queue."""
    request = command_pb2.CancelConsumerRequest(
        parent=session().parent(),
        worker=_short(worker),
        queue=queue,
        idempotency_key=idempotency_key,
    )
    _issue("CancelConsumer", request, wait, timeout)


@workers.command(name="rate-limit")
@click.argument("kind")
@click.argument("rate")
@click.option("--worker", default="", help="only this worker (default: every worker)")
@click.option("--idempotency-key", default="")
@click.option("--wait/--no-wait", default=True, help="follow the command until it settles")
def rate_limit(kind: str, rate: str, worker: str, idempotency_key: str, wait: bool) -> None:
    """Limit how fast tasks of KIND start, e.g. `rate-limit email.send 10/s` ("" clears)."""
    request = command_pb2.SetRateLimitRequest(
        parent=session().parent(),
        kind=kind,
        rate_limit=rate,
        worker=_short(worker),
        idempotency_key=idempotency_key,
    )
    _issue("SetRateLimit", request, wait)


COMMANDS = [workers]
