"""`conveyor tasks ...`: create, get, list, cancel, approve, reject, tree, export, delete,
retry, watch, logs."""

from __future__ import annotations

import sys
from typing import IO, Any

import click

from conveyor.client import _requests as req
from conveyor.client.cli._filters import filter_options, is_empty, task_filter
from conveyor.client.cli._output import Output, note
from conveyor.client.cli._params import (
    DURATION,
    EXPORT_FORMAT,
    JSON,
    KEY_VALUE,
    LIMIT,
    TASK_ID,
    TIME,
)
from conveyor.client.cli._progress import (
    EXIT_TIMEOUT,
    TASK_EXIT_CODES,
    WaitTimedOut,
    finish_command,
    wait_for_task,
)
from conveyor.client.cli._session import session
from conveyor.v1 import command_pb2, enums_pb2, task_service_pb2


@click.group()
def tasks() -> None:
    """Create, read, steer and export tasks."""


@tasks.command()
@click.argument("kind")
@click.option("--input", "input_", type=JSON, default=None, help="the input, as JSON")
@click.option("--queue", default=None, help="default: default")
@click.option("--priority", type=click.IntRange(1, 9), default=None, help="1 (highest) .. 9")
@click.option("--label", "labels", type=KEY_VALUE, multiple=True, help="KEY=VALUE; repeatable")
@click.option("--schedule-time", type=TIME, default=None, help="not before this time")
@click.option("--lease-duration", type=DURATION, default=None, help="e.g. 30s")
@click.option("--execution-timeout", type=DURATION, default=None, help="per attempt, e.g. 15m")
@click.option("--correlation-id", default=None)
@click.option("--parent-task", default=None, help="makes this task a child of that one")
@click.option("--requires-approval", is_flag=True, default=None)
@click.option("--callback-url", default=None)
@click.option(
    "--depends-on",
    "depends_on",
    type=TASK_ID,
    multiple=True,
    help="a task that must succeed first; repeatable (up to 100)",
)
@click.option(
    "--on-dependency-failure",
    "dependency_failure_policy",
    type=click.Choice(["cancel", "run_anyway"]),
    default=None,
    help="when a dependency does not succeed: cancel this task (default) or run it anyway",
)
@click.option("--request-id", default=None, help="dedupes retried creates")
def create(kind: str, input_: Any, request_id: str | None, **options: Any) -> None:
    """Enqueue a task of KIND."""
    current = session()
    chosen = {k: v for k, v in options.items() if v not in (None, ())}
    if "labels" in chosen:
        chosen["labels"] = dict(chosen["labels"])
    client = current.client()
    project = current.resolve_project()
    if "depends_on" in chosen:
        chosen["depends_on"] = [current.child("tasks", t) for t in chosen["depends_on"]]
    Output().one(client.create_task(kind, input_, request_id=request_id, project=project, **chosen))


@tasks.command()
@click.argument("task", type=TASK_ID)
@click.option(
    "--wait",
    type=float,
    is_flag=False,
    flag_value=60.0,
    default=None,
    metavar="[SECONDS]",
    help="wait until the task ends (default 60 s); exit 0 only if it SUCCEEDED",
)
def get(task: str, wait: float | None) -> None:
    """Show a task; with --wait, follow it until it ends.

    --wait exits 0 when the task SUCCEEDED, 3 FAILED, 4 CANCELLED, 5 INTERRUPTED, and 124
    when it has not ended after SECONDS.
    """
    current = session()
    client = current.client()
    name = current.child("tasks", task)
    if wait is None:
        Output().one(client.get_task(name))
        return
    try:
        done = wait_for_task(client, name, wait)
    except WaitTimedOut as timed_out:
        Output().one(timed_out.task)
        note(f"error: {timed_out} after {wait:g} s")
        raise click.exceptions.Exit(EXIT_TIMEOUT) from None
    Output().one(done)
    code = TASK_EXIT_CODES.get(done.state, 1)
    if code:
        raise click.exceptions.Exit(code)


@tasks.command(name="list")
@filter_options
@click.option("--order-by", default="", help="create_time [desc] or priority [desc]")
@click.option(
    "--limit", type=LIMIT, default=100, show_default=True, help="at most this many (0: all)"
)
def list_(order_by: str, limit: int, **params: Any) -> None:
    """List tasks, oldest first."""
    current = session()
    message = task_filter(params)
    client = current.client()
    found = []
    page_size = min(limit, 1000) if limit else 1000
    for task in client.list_tasks(
        filter=message, order_by=order_by, page_size=page_size, project=current.resolve_project()
    ):
        found.append(task)
        if len(found) == limit:
            break
    Output().many(found, "task")


@tasks.command()
@click.argument("task", type=TASK_ID)
@click.option("--reason", default="")
def cancel(task: str, reason: str) -> None:
    """Cancel a waiting task, or ask a running one's worker to stop."""
    current = session()
    Output().one(current.client().cancel_task(current.child("tasks", task), reason))


@tasks.command()
@click.argument("task", type=TASK_ID)
@click.option("--comment", default="")
def approve(task: str, comment: str) -> None:
    """Approve a task that awaits approval."""
    current = session()
    request = task_service_pb2.ApproveTaskRequest(
        name=current.child("tasks", task), comment=comment
    )
    Output().one(current.client().tasks.ApproveTask(request))


@tasks.command()
@click.argument("task", type=TASK_ID)
@click.option("--reason", default="")
def reject(task: str, reason: str) -> None:
    """Reject a task that awaits approval (it ends CANCELLED)."""
    current = session()
    request = task_service_pb2.RejectTaskRequest(name=current.child("tasks", task), reason=reason)
    Output().one(current.client().tasks.RejectTask(request))


@tasks.command()
@click.argument("task", type=TASK_ID)
def tree(task: str) -> None:
    """A task's tree: its root and every descendant (at most 500), then the tasks
    outside it that its tasks depend on."""
    current = session()
    request = task_service_pb2.GetTaskTreeRequest(name=current.child("tasks", task))
    answer = current.client().tasks.GetTaskTree(request)
    Output().many([*answer.tasks, *answer.dependencies], "task")
    if answer.truncated:
        note("(truncated: the tree has more tasks than shown)")
    if answer.dependencies:
        note(f"(the last {len(answer.dependencies)} are dependencies outside the tree)")


@tasks.command()
@filter_options
@click.option("--format", "format_", type=EXPORT_FORMAT, default="csv", show_default=True)
@click.option("--field", "fields", multiple=True, help="a column; repeatable (default: all)")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, writable=True, allow_dash=True),
    default="-",
    help="file to write (default: stdout)",
)
def export(format_: int, fields: tuple[str, ...], out: str, **params: Any) -> None:
    """Export the tasks matching the filter as CSV, XLSX or NDJSON."""
    current = session()
    if out == "-" and format_ == enums_pb2.EXPORT_FORMAT_XLSX and sys.stdout.isatty():
        raise click.UsageError("XLSX is binary: pass --out FILE.xlsx or redirect stdout")
    request = task_service_pb2.ExportTasksRequest(
        parent=current.parent(),
        filter=task_filter(params),
        format=format_,  # type: ignore[arg-type]
        fields=fields,
    )
    stream = current.client().tasks.ExportTasks(request)
    text_rows = format_ != enums_pb2.EXPORT_FORMAT_XLSX
    # The CSV header is a line too; NDJSON has none.
    header = (
        1 if format_ in (enums_pb2.EXPORT_FORMAT_CSV, enums_pb2.EXPORT_FORMAT_UNSPECIFIED) else 0
    )
    lines = written = 0
    sink: IO[bytes]
    with click.open_file(out, "wb") as sink:
        for chunk in stream:
            sink.write(chunk.data)
            written += len(chunk.data)
            lines += chunk.data.count(b"\n")
            if sys.stderr.isatty():
                shown = f"{max(lines - header, 0)} rows" if text_rows else f"{written} bytes"
                sys.stderr.write(f"\rexporting: {shown} written")
        sink.flush()
    if sys.stderr.isatty():
        sys.stderr.write("\n")
    where = "stdout" if out == "-" else out
    what = f"{max(lines - header, 0)} rows" if text_rows else f"{written} bytes"
    note(f"exported {what} to {where}")


@tasks.command()
@click.argument("task_ids", nargs=-1, type=TASK_ID)
@filter_options
def delete(task_ids: tuple[str, ...], **params: Any) -> None:
    """Delete finished tasks, by id or by filter (running ones are skipped)."""
    current = session()
    message = task_filter(params)
    if not task_ids and is_empty(message):
        raise click.UsageError("name tasks by id, or give a filter (e.g. --state succeeded)")
    request = task_service_pb2.BatchDeleteTasksRequest(
        parent=current.parent(),
        names=[current.child("tasks", t) for t in task_ids],
        filter=None if is_empty(message) else message,
    )
    Output().one(current.client().tasks.BatchDeleteTasks(request))


@tasks.command()
@click.argument("task", type=TASK_ID, required=False)
@click.option("--input", "input_", type=JSON, default=None, help="override the input (JSON)")
@click.option("--all", "all_", is_flag=True, help="retry every task matching the filter")
@filter_options
@click.option("--max", "max_", type=click.IntRange(1, 10000), default=1000, show_default=True)
@click.option("--idempotency-key", default="")
@click.option("--wait/--no-wait", default=True, help="follow the command until it settles")
def retry(
    task: str | None,
    input_: Any,
    all_: bool,
    max_: int,
    idempotency_key: str,
    wait: bool,
    **params: Any,
) -> None:
    """Retry a finished task (a new attempt), or with --all every task the filter matches."""
    current = session()
    client = current.client()
    message = task_filter(params)
    if (task is None) == (not all_):
        raise click.UsageError("give a TASK, or --all with a filter (not both)")
    if task is not None:
        request = command_pb2.RetryTaskRequest(
            parent=current.parent(),
            task=current.child("tasks", task),
            idempotency_key=idempotency_key,
        )
        if input_ is not None:
            from conveyor.client._json import to_value

            request.override_input.CopyFrom(to_value(input_))
        command = client.commands.RetryTask(request)
    else:
        command = client.commands.BatchRetryTasks(
            command_pb2.BatchRetryTasksRequest(
                parent=current.parent(),
                filter=message,
                max=max_,
                idempotency_key=idempotency_key,
            )
        )
    finish_command(client, command, wait)


@tasks.command()
@click.argument("task_ids", nargs=-1, type=TASK_ID)
@filter_options
@click.option("--type", "types", multiple=True, help="event type glob, e.g. task.failed")
@click.option("--after", type=LIMIT, default=0, help="replay from after this event id")
def watch(task_ids: tuple[str, ...], types: tuple[str, ...], after: int, **params: Any) -> None:
    """Print task events as they happen (NDJSON unless on a terminal); Ctrl-C ends it.

    With task ids it prints their events so far, follows them, and ends by itself once
    every one of them has ended.
    """
    current = session()
    client = current.client()
    names = [current.child("tasks", t) for t in task_ids]
    message = task_filter(params)
    pending = set(names)
    output = Output()

    def show(event: Any) -> bool:
        """Prints one event; True once every named task has ended."""
        output.stream_item(event, "event")
        if event.task.state in req.TERMINAL_STATES:
            pending.discard(event.task.name)
        return bool(names) and not pending

    if names and not after:
        # The named tasks' story so far, then the live tail from its last event: a
        # task that ends in between is seen ending, and one that has ended stops it.
        for event in client.list_events(
            types=types or ("task.*",), tasks=names, project=current.resolve_project()
        ):
            after = event.id
            if show(event):
                return
    stream = client.watch_events(
        types=types or ("task.*",),
        tasks=names,
        task_filter=None if is_empty(message) else message,
        after=after,
        project=current.resolve_project(),
    )
    try:
        for event in stream:
            if show(event):
                return
    finally:
        stream.close()


@tasks.command()
@click.argument("task", type=TASK_ID)
@click.option("--follow", "-f", is_flag=True, help="tail the attempt until it ends")
@click.option("--attempt", type=LIMIT, default=0, help="only this attempt (1 is the first)")
def logs(task: str, follow: bool, attempt: int) -> None:
    """Print a task's log lines (its handler's ctx.log and captured output), oldest first.

    --follow tails one attempt (the current one, or the first to start, unless --attempt
    says which) and returns when it ends. A line kept after older ones were dropped (the
    queue's max_log_lines / max_log_bytes) is preceded by a note on stderr saying how many.
    """
    current = session()
    client = current.client()
    name = current.child("tasks", task)
    output = Output()
    lines = (
        client.watch_task_logs(name, attempt=attempt)
        if follow
        else client.list_task_logs(name, attempt=attempt)
    )
    for line in lines:
        if line.dropped_count:
            note(f"({line.dropped_count} earlier lines of attempt {line.attempt} were dropped)")
        output.stream_item(line, "task_log")


COMMANDS = [tasks]
