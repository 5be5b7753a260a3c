"""`conveyor queues ...`: list, get, update, pause, resume, purge."""

from __future__ import annotations

import sys
from datetime import timedelta

import click

from conveyor.client.cli._output import Output, note
from conveyor.client.cli._params import DURATION, LIMIT
from conveyor.client.cli._progress import finish_command
from conveyor.client.cli._session import session
from conveyor.v1 import command_pb2


@click.group()
def queues() -> None:
    """Queues: depth, limits, pause and purge."""


@queues.command(name="list")
def list_() -> None:
    """Every queue with its counts and limits."""
    current = session()
    client = current.client()
    Output().many(list(client.list_queues(project=current.resolve_project())), "queue")


@queues.command()
@click.argument("queue")
def get(queue: str) -> None:
    """A queue, its stats and its purge confirm token."""
    current = session()
    Output().one(current.client().get_queue(current.child("queues", queue)))


@queues.command()
@click.argument("queue")
@click.option("--max-concurrency", type=LIMIT, default=None, help="0: no limit")
@click.option("--rate-limit", default=None, help='e.g. "10/s", "600/m"; "" clears it')
@click.option(
    "--execution-timeout",
    type=DURATION,
    default=None,
    help="default per attempt of tasks created later, e.g. 15m; 0 clears it",
)
@click.option(
    "--max-log-lines", type=LIMIT, default=None, help="lines kept per attempt's log; 0: 10,000"
)
@click.option(
    "--max-log-bytes", type=LIMIT, default=None, help="bytes kept per attempt's log; 0: 1 MiB"
)
def update(
    queue: str,
    max_concurrency: int | None,
    rate_limit: str | None,
    execution_timeout: timedelta | None,
    max_log_lines: int | None,
    max_log_bytes: int | None,
) -> None:
    """Change the settings given (and only those)."""
    given = (max_concurrency, rate_limit, execution_timeout, max_log_lines, max_log_bytes)
    if all(value is None for value in given):
        raise click.UsageError(
            "give --max-concurrency, --rate-limit, --execution-timeout, --max-log-lines"
            " and/or --max-log-bytes"
        )
    current = session()
    Output().one(
        current.client().update_queue(
            current.child("queues", queue),
            max_concurrency=max_concurrency,
            rate_limit=rate_limit,
            execution_timeout=execution_timeout,
            max_log_lines=max_log_lines,
            max_log_bytes=max_log_bytes,
        )
    )


@queues.command()
@click.argument("queue")
@click.option("--reason", default="")
def pause(queue: str, reason: str) -> None:
    """Stop leasing from a queue (tasks keep arriving)."""
    current = session()
    Output().one(current.client().pause_queue(current.child("queues", queue), reason))


@queues.command()
@click.argument("queue")
def resume(queue: str) -> None:
    """Lease from a paused queue again."""
    current = session()
    Output().one(current.client().resume_queue(current.child("queues", queue)))


@queues.command()
@click.argument("queue")
@click.option("--yes", "-y", is_flag=True, help="do not ask; purge the depth shown")
@click.option("--force", is_flag=True, help="skip the depth check (logged at critical)")
@click.option("--idempotency-key", default="")
@click.option("--wait/--no-wait", default=True, help="follow the command until it settles")
def purge(queue: str, yes: bool, force: bool, idempotency_key: str, wait: bool) -> None:
    """Delete every queued task of a queue, confirming the depth it has now."""
    current = session()
    client = current.client()
    shown = client.get_queue(current.child("queues", queue))
    depth = shown.stats.queued
    short = shown.name.rsplit("/", 1)[-1]
    if not yes and not force:
        if not sys.stdin.isatty():
            raise click.UsageError(f"{short} has {depth} queued tasks: pass --yes to purge them")
        if not click.confirm(f"purge {depth} queued tasks from {short}?", err=True):
            note("not purged")
            raise click.exceptions.Exit(1)
    command = client.commands.PurgeQueue(
        command_pb2.PurgeQueueRequest(
            parent=current.parent(),
            queue=short,
            confirm_token=shown.purge_confirm_token,
            force=force,
            idempotency_key=idempotency_key,
        )
    )
    finish_command(client, command, wait)


COMMANDS = [queues]
