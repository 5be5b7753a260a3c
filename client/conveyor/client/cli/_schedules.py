"""`conveyor schedules ...`: create, list, get, update, pause, resume, snooze, run, cancel,
preview, delete."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click
from google.protobuf import field_mask_pb2

from conveyor.client._json import to_value
from conveyor.client._requests import duration, timestamp
from conveyor.client.cli._output import Output
from conveyor.client.cli._params import (
    DST,
    DURATION,
    JSON,
    KEY_VALUE,
    OVERLAP,
    SCHEDULE_STATE,
    TIME,
)
from conveyor.client.cli._progress import all_pages
from conveyor.client.cli._session import session
from conveyor.v1 import enums_pb2, schedule_pb2

_KINDS = {
    "cron": enums_pb2.SCHEDULE_KIND_CRON,
    "rrule": enums_pb2.SCHEDULE_KIND_RRULE,
    "once": enums_pb2.SCHEDULE_KIND_ONCE,
    "on_event": enums_pb2.SCHEDULE_KIND_EVENT,
}

_SPEC_OPTIONS = [
    click.option("--cron", default=None, help='a cron expression, e.g. "30 2 * * *"'),
    click.option("--rrule", default=None, help='an RFC 5545 RRULE, e.g. "FREQ=DAILY;BYHOUR=8"'),
    click.option("--once", default=None, help="one RFC 3339 time"),
    click.option("--on-event", default=None, help="an event type glob, e.g. deploy.*"),
    click.option("--timezone", default=None, help="IANA zone, e.g. Europe/Paris"),
]

_FIELD_OPTIONS = [
    click.option("--title", default=None),
    click.option("--description", default=None),
    click.option("--task-kind", default=None, help="the kind of the tasks it creates"),
    click.option("--queue", default=None, help="their queue"),
    click.option("--input", "input_", type=JSON, default=None, help="their input, as JSON"),
    click.option("--priority", type=click.IntRange(1, 9), default=None),
    click.option("--label", "labels", type=KEY_VALUE, multiple=True, help="KEY=VALUE"),
    click.option("--overlap", type=OVERLAP, default=None, help="while the last still runs"),
    click.option("--catchup-window", type=DURATION, default=None, help="e.g. 1h"),
    click.option("--jitter", type=DURATION, default=None, help="e.g. 30s"),
    click.option("--dst", type=DST, default=None, help="for times a DST change skips"),
]


F = TypeVar("F", bound=Callable[..., Any])


def _options(options: list[Any]) -> Callable[[F], F]:
    def apply(function: F) -> F:
        for option in reversed(options):
            function = option(function)
        return function

    return apply


def _build(params: dict[str, Any]) -> tuple[schedule_pb2.Schedule, list[str]]:
    """The Schedule of the given options, and the field paths they set."""
    schedule = schedule_pb2.Schedule()
    paths: list[str] = []
    given = [k for k in _KINDS if params.get(k) is not None]
    if len(given) > 1:
        raise click.UsageError("give one of --cron, --rrule, --once or --on-event")
    if given:
        schedule.spec.kind = _KINDS[given[0]]
        schedule.spec.expression = params[given[0]]
        paths += ["spec.kind", "spec.expression"]
    if params.get("timezone") is not None:
        schedule.spec.timezone = params["timezone"]
        paths.append("spec.timezone")
    for key, field in (("title", "title"), ("description", "description")):
        if params.get(key) is not None:
            setattr(schedule, field, params[key])
            paths.append(field)
    template = schedule.task_template
    for key, field in (("task_kind", "kind"), ("queue", "queue"), ("priority", "priority")):
        if params.get(key) is not None:
            setattr(template, field, params[key])
            paths.append(f"task_template.{field}")
    if params.get("input_") is not None:
        template.input.CopyFrom(to_value(params["input_"]))
        paths.append("task_template.input")
    if params.get("labels"):
        template.labels.update(dict(params["labels"]))
        paths.append("task_template.labels")
    for key, field in (("overlap", "overlap_policy"), ("dst", "dst_policy")):
        if params.get(key) is not None:
            setattr(schedule, field, params[key])
            paths.append(field)
    for key in ("catchup_window", "jitter"):
        if params.get(key) is not None:
            getattr(schedule, key).CopyFrom(duration(params[key]))
            paths.append(key)
    return schedule, paths


@click.group()
def schedules() -> None:
    """Schedules: cron, RRULE, once and event triggers that create tasks."""


@schedules.command()
@click.argument("schedule_id", required=False)
@_options(_SPEC_OPTIONS + _FIELD_OPTIONS)
def create(schedule_id: str | None, **params: Any) -> None:
    """Create a schedule (SCHEDULE_ID is optional; the server picks one without it)."""
    schedule, paths = _build(params)
    if "spec.kind" not in paths:
        raise click.UsageError("give one of --cron, --rrule, --once or --on-event")
    if "task_template.kind" not in paths:
        raise click.UsageError("give --task-kind, the kind of the tasks it creates")
    current = session()
    request = schedule_pb2.CreateScheduleRequest(
        parent=current.parent(), schedule_id=schedule_id or "", schedule=schedule
    )
    Output().one(current.client().schedules.CreateSchedule(request))


@schedules.command(name="list")
@click.option("--state", "states", type=SCHEDULE_STATE, multiple=True, help="repeatable")
def list_(states: tuple[int, ...]) -> None:
    """Every schedule of the project."""
    current = session()
    client = current.client()
    request = schedule_pb2.ListSchedulesRequest(
        parent=current.parent(),
        filter=schedule_pb2.ScheduleFilter(states=states),  # type: ignore[arg-type]
        page_size=1000,
    )
    Output().many(all_pages(client.schedules.ListSchedules, request, "schedules"), "schedule")


@schedules.command()
@click.argument("schedule")
def get(schedule: str) -> None:
    """A schedule with its next run and recent runs."""
    current = session()
    request = schedule_pb2.GetScheduleRequest(name=current.child("schedules", schedule))
    Output().one(current.client().schedules.GetSchedule(request))


@schedules.command()
@click.argument("schedule")
@_options(_SPEC_OPTIONS + _FIELD_OPTIONS)
def update(schedule: str, **params: Any) -> None:
    """Change the fields given (and only those)."""
    message, paths = _build(params)
    if not paths:
        raise click.UsageError("give at least one field to change (see --help)")
    current = session()
    message.name = current.child("schedules", schedule)
    request = schedule_pb2.UpdateScheduleRequest(
        schedule=message, update_mask=field_mask_pb2.FieldMask(paths=paths)
    )
    Output().one(current.client().schedules.UpdateSchedule(request))


def _by_name(method: str, request_type: Any, schedule: str, **fields: Any) -> None:
    current = session()
    request = request_type(name=current.child("schedules", schedule), **fields)
    Output().one(getattr(current.client().schedules, method)(request))


@schedules.command()
@click.argument("schedule")
@click.option("--notes", default="", help="why, shown with the schedule")
def pause(schedule: str, notes: str) -> None:
    """Stop firing until resumed."""
    _by_name("PauseSchedule", schedule_pb2.PauseScheduleRequest, schedule, notes=notes)


@schedules.command()
@click.argument("schedule")
def resume(schedule: str) -> None:
    """Fire again from the next occurrence."""
    _by_name("ResumeSchedule", schedule_pb2.ResumeScheduleRequest, schedule)


@schedules.command()
@click.argument("schedule")
@click.option("--for", "delay", type=DURATION, required=True, help="e.g. 2h (at most 7d)")
@click.option("--reason", default="")
def snooze(schedule: str, delay: Any, reason: str) -> None:
    """Hold the schedule for a while; the due occurrence fires when it ends."""
    _by_name(
        "SnoozeSchedule",
        schedule_pb2.SnoozeScheduleRequest,
        schedule,
        delay=duration(delay),
        reason=reason,
    )


@schedules.command()
@click.argument("schedule")
@click.option("--overlap", type=OVERLAP, default=None, help="default: the schedule's own")
def run(schedule: str, overlap: int | None) -> None:
    """Fire now (through the overlap policy); prints the task it created."""
    _by_name(
        "RunScheduleNow", schedule_pb2.RunScheduleNowRequest, schedule, overlap_policy=overlap or 0
    )


@schedules.command()
@click.argument("schedule")
def cancel(schedule: str) -> None:
    """End the schedule for good (it is kept, CANCELLED)."""
    _by_name("CancelSchedule", schedule_pb2.CancelScheduleRequest, schedule)


@schedules.command()
@click.argument("schedule")
def delete(schedule: str) -> None:
    """Delete the schedule."""
    current = session()
    request = schedule_pb2.DeleteScheduleRequest(name=current.child("schedules", schedule))
    current.client().schedules.DeleteSchedule(request)
    Output().one({"deleted": request.name})


@schedules.command()
@click.argument("schedule", required=False)
@click.option("--count", type=click.IntRange(1, 100), default=5, show_default=True)
@click.option("--start", type=TIME, default=None, help="from this time (default: now)")
@_options(_SPEC_OPTIONS)
def preview(schedule: str | None, count: int, start: Any, **params: Any) -> None:
    """The next fire times of a schedule, or of a spec given with --cron etc."""
    current = session()
    request = schedule_pb2.PreviewScheduleRequest(count=count)
    if start is not None:
        request.start_time.CopyFrom(timestamp(start))
    spec, paths = _build(params)
    if schedule is not None:
        request.name = current.child("schedules", schedule)
    elif "spec.kind" in paths:
        request.parent = current.parent()
        request.schedule.CopyFrom(spec)
        # A spec alone is enough to preview; the template only has to be valid.
        request.schedule.task_template.kind = "preview"
    else:
        raise click.UsageError("give a SCHEDULE, or a spec with --cron, --rrule, --once")
    answer = current.client().schedules.PreviewSchedule(request)
    output = Output()
    if output.tabular:
        output.many([{"fire_time": t.ToJsonString()} for t in answer.fire_times], "fire_time")
    else:
        output.one(answer)


COMMANDS = [schedules]
