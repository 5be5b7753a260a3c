"""Long work, shown as it goes: a task until it ends, a command until it settles.

Changes are printed to stderr (stdout keeps only the result), one line per change; on a
terminal a rich spinner also shows what is being waited for and for how long.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import click
from rich.console import Console

from conveyor.client import _requests as req
from conveyor.client.cli._output import note
from conveyor.v1 import command_pb2, enums_pb2, task_pb2

EXIT_FAILED = 3
EXIT_CANCELLED = 4
EXIT_INTERRUPTED_TASK = 5
EXIT_TIMEOUT = 124

TASK_EXIT_CODES = {
    enums_pb2.TASK_STATE_SUCCEEDED: 0,
    enums_pb2.TASK_STATE_FAILED: EXIT_FAILED,
    enums_pb2.TASK_STATE_CANCELLED: EXIT_CANCELLED,
    enums_pb2.TASK_STATE_INTERRUPTED: EXIT_INTERRUPTED_TASK,
}

SETTLED_COMMANDS = frozenset(
    {
        enums_pb2.COMMAND_STATUS_SUCCEEDED,
        enums_pb2.COMMAND_STATUS_FAILED,
        enums_pb2.COMMAND_STATUS_TIMED_OUT,
    }
)


def _task_line(task: task_pb2.Task) -> str:
    line = f"{task.name.rsplit('/', 1)[-1]}: {req.state_name(task.state)}"
    if task.blocked_reason:
        reason = enums_pb2.BlockedReason.Name(task.blocked_reason)
        line += f" (blocked: {reason.removeprefix('BLOCKED_REASON_').lower()})"
    if task.state_reason:
        line += f" - {task.state_reason}"
    return line


class WaitTimedOut(Exception):
    def __init__(self, task: task_pb2.Task) -> None:
        super().__init__(f"{task.name} is still {req.state_name(task.state)}")
        self.task = task


@contextlib.contextmanager
def _spinner(what: str) -> Iterator[Any]:
    """A live status line on a terminal (None elsewhere): `update(text)` to change it."""
    console = Console(stderr=True)
    if not console.is_terminal:
        yield None
        return
    with console.status(what) as status:
        yield status


def wait_for_task(client: Any, name: str, timeout: float) -> task_pb2.Task:
    """Polls the task until it is terminal, noting each change of state or blocked
    reason; WaitTimedOut after `timeout` seconds."""
    started = time.monotonic()
    deadline = started + timeout
    shown = ""
    with _spinner(f"waiting for {name}") as status:
        for delay in req.poll_delays():
            task: task_pb2.Task = client.get_task(name)
            line = _task_line(task)
            if line != shown:
                note(line)
                shown = line
            if status is not None:
                status.update(f"{line} ({time.monotonic() - started:.0f} s)")
            if task.state in req.TERMINAL_STATES:
                return task
            if time.monotonic() + delay > deadline:
                raise WaitTimedOut(task)
            time.sleep(delay)
    raise AssertionError("unreachable")


def follow_command(
    client: Any, command: command_pb2.Command, timeout: float = 120.0
) -> command_pb2.Command:
    """Polls a command until it settles (or `timeout`), noting each status change."""
    deadline = time.monotonic() + timeout
    shown = -1
    with _spinner(f"following {command.name}") as spinner:
        for delay in req.poll_delays():
            if command.status != shown:
                status = enums_pb2.CommandStatus.Name(command.status)
                extra = f" {_result(command)}" if command.status in SETTLED_COMMANDS else ""
                note(f"{command.name}: {status.removeprefix('COMMAND_STATUS_')}{extra}")
                shown = command.status
                if spinner is not None:
                    spinner.update(f"{command.name}: {status.removeprefix('COMMAND_STATUS_')}")
            if command.status in SETTLED_COMMANDS or time.monotonic() + delay > deadline:
                return command
            time.sleep(delay)
            request = command_pb2.GetCommandRequest(name=command.name)
            command = client.commands.GetCommand(request)
    raise AssertionError("unreachable")


def _result(command: command_pb2.Command) -> str:
    if command.HasField("error") and command.error.message:
        return command.error.message
    from conveyor.client.cli._output import to_data

    result = to_data(command).get("result")
    return "" if not result else str(result)


def command_exit(command: command_pb2.Command) -> None:
    """Exit 1 when the command failed or timed out (it is printed already)."""
    if command.status in (enums_pb2.COMMAND_STATUS_FAILED, enums_pb2.COMMAND_STATUS_TIMED_OUT):
        raise click.exceptions.Exit(1)


def finish_command(
    client: Any, command: command_pb2.Command, wait: bool, timeout: float = 120.0
) -> None:
    """Follows the command (with `wait`), prints it, and exits 1 if it failed."""
    from conveyor.client.cli._output import Output

    if wait:
        command = follow_command(client, command, timeout)
    Output().one(command)
    command_exit(command)


def all_pages(method: Any, request: Any, field: str, limit: int = 0) -> list[Any]:
    """Every item of a List call (at most `limit`, 0: all), a page at a time."""
    found: list[Any] = []
    while True:
        page = method(request)
        found.extend(getattr(page, field))
        if limit and len(found) >= limit:
            return found[:limit]
        if not page.next_page_token:
            return found
        request.page_token = page.next_page_token
