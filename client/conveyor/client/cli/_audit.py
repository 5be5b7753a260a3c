"""`conveyor audit ...`: the command log (list, get) and its hash chain (verify)."""

from __future__ import annotations

import click

from conveyor.client.cli._output import Output
from conveyor.client.cli._params import COMMAND_STATUS, COMMAND_VERB, LIMIT
from conveyor.client.cli._progress import all_pages
from conveyor.client.cli._session import session
from conveyor.v1 import command_pb2


@click.group()
def audit() -> None:
    """The audit log: every command and change made on behalf of a key."""


@audit.command(name="list")
@click.option("--status", "statuses", type=COMMAND_STATUS, multiple=True, help="repeatable")
@click.option("--verb", "verbs", type=COMMAND_VERB, multiple=True, help="repeatable")
@click.option("--issued-by", default="", help="an API key's name")
@click.option("--limit", type=LIMIT, default=100, show_default=True, help="0: all")
def list_(statuses: tuple[int, ...], verbs: tuple[int, ...], issued_by: str, limit: int) -> None:
    """Commands, newest first."""
    current = session()
    client = current.client()
    request = command_pb2.ListCommandsRequest(
        parent=current.parent(),
        filter=command_pb2.CommandFilter(
            statuses=statuses,  # type: ignore[arg-type]
            verbs=verbs,  # type: ignore[arg-type]
            issued_by=issued_by,
        ),
        page_size=min(limit, 1000) if limit else 1000,
    )
    found = all_pages(client.commands.ListCommands, request, "commands", limit)
    Output().many(found, "command")


@audit.command()
@click.argument("command")
def get(command: str) -> None:
    """One command by its sequence number or name."""
    current = session()
    request = command_pb2.GetCommandRequest(name=current.child("commands", command))
    Output().one(current.client().commands.GetCommand(request))


@audit.command()
def verify() -> None:
    """Check the hash chain; exit 1 and name the first bad sequence when it is broken."""
    current = session()
    answer = current.client().commands.VerifyAuditLog(
        command_pb2.VerifyAuditLogRequest(parent=current.parent())
    )
    Output().one(answer)
    if not answer.ok:
        raise click.exceptions.Exit(1)


COMMANDS = [audit]
