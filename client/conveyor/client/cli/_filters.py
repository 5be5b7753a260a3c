"""The TaskFilter as options, shared by tasks list, export, delete, retry --all and watch."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from conveyor.client import _requests as req
from conveyor.client.cli._params import KEY_VALUE, TASK_STATE, TIME
from conveyor.v1 import task_pb2

F = TypeVar("F", bound=Callable[..., Any])

_OPTIONS = [
    click.option("--state", "states", type=TASK_STATE, multiple=True, help="repeatable"),
    click.option(
        "--priority",
        "priorities",
        multiple=True,
        help="1..9 or critical, high, normal, low; repeatable",
    ),
    click.option("--kind", "kinds", multiple=True, help="repeatable"),
    click.option("--queue", "queues", multiple=True, help="repeatable"),
    click.option("--worker", "workers", multiple=True, help="repeatable"),
    click.option("--label", "labels", type=KEY_VALUE, multiple=True, help="KEY=VALUE; repeatable"),
    click.option("--correlation-id", default=None),
    click.option("--root-task", default=None, help="tasks in this task's tree"),
    click.option("--search", default=None, help="text in the kind, summary or error"),
    click.option("--created-after", type=TIME, default=None, help="RFC 3339"),
    click.option("--created-before", type=TIME, default=None, help="RFC 3339"),
]

FILTER_PARAMS = (
    "states",
    "priorities",
    "kinds",
    "queues",
    "workers",
    "labels",
    "correlation_id",
    "root_task",
    "search",
    "created_after",
    "created_before",
)


def filter_options(function: F) -> F:
    for option in reversed(_OPTIONS):
        function = option(function)
    return function


def task_filter(params: dict[str, Any]) -> task_pb2.TaskFilter:
    """The TaskFilter of the filter options in `params` (which it removes)."""
    criteria: dict[str, Any] = {}
    for name in FILTER_PARAMS:
        value = params.pop(name, None)
        if value in (None, (), ""):
            continue
        if name == "labels":
            value = dict(value)
        criteria[name] = value
    return req.task_filter(criteria)  # type: ignore[arg-type]


def is_empty(message: task_pb2.TaskFilter) -> bool:
    return message.ByteSize() == 0
