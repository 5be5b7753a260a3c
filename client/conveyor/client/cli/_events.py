"""`conveyor events ...`: watch, list, publish."""

from __future__ import annotations

from typing import Any

import click

from conveyor.client.cli._filters import filter_options, is_empty, task_filter
from conveyor.client.cli._output import Output
from conveyor.client.cli._params import JSON, LIMIT
from conveyor.client.cli._session import session

_TYPES = click.option(
    "--type", "types", multiple=True, help="an event type or glob (task.*); repeatable"
)


@click.group()
def events() -> None:
    """The project's event log: every state change, and custom events."""


@events.command()
@_TYPES
@filter_options
@click.option("--after", type=LIMIT, default=0, help="replay from after this event id")
def watch(types: tuple[str, ...], after: int, **params: Any) -> None:
    """Print events as they happen, one JSON object a line (a row on a terminal).

    Resumes by itself after a disconnect; Ctrl-C ends it.
    """
    current = session()
    message = task_filter(params)
    output = Output()
    stream = current.client().watch_events(
        types=types,
        task_filter=None if is_empty(message) else message,
        after=after,
        project=current.resolve_project(),
    )
    try:
        for event in stream:
            output.stream_item(event, "event")
    finally:
        stream.close()


@events.command(name="list")
@_TYPES
@filter_options
@click.option("--after", type=LIMIT, default=0, help="only events after this id")
@click.option("--limit", type=LIMIT, default=100, show_default=True, help="0: all")
def list_(types: tuple[str, ...], after: int, limit: int, **params: Any) -> None:
    """Events, oldest first."""
    current = session()
    message = task_filter(params)
    found = []
    for event in current.client().list_events(
        types=types,
        task_filter=None if is_empty(message) else message,
        after=after,
        page_size=min(limit, 1000) if limit else 1000,
        project=current.resolve_project(),
    ):
        found.append(event)
        if len(found) == limit:
            break
    Output().many(found, "event")


@events.command()
@click.argument("type_", metavar="TYPE")
@click.option("--data", type=JSON, default=None, help="a JSON object")
@click.option("--subject", default="")
def publish(type_: str, data: Any, subject: str) -> None:
    """Append a custom event (it can fire EVENT schedules)."""
    if data is not None and not isinstance(data, dict):
        raise click.BadParameter("must be a JSON object", param_hint="--data")
    current = session()
    Output().one(
        current.client().publish_event(
            type_, data, subject=subject, project=current.resolve_project()
        )
    )


COMMANDS = [events]
