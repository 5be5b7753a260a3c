"""Seed 004, ScaiGrid's scheduled tasks: its bodies as v1 Schedule requests, and v1
Schedules as its scheduled tasks. Pure mapping, no I/O; docs/compat/004-scaigrid.md
explains each choice.

A scheduled task is a CRON Schedule whose template runs the `action` (the task kind)
with `args` (the task input); `enabled` is the schedule being active, not paused.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from conveyor.server.compat.body import Fields, check, page_of, rfc3339, value_of
from conveyor.server.errors import Violations
from conveyor.server.gateway.jsonform import to_json
from conveyor.v1 import enums_pb2, schedule_pb2

__all__ = ["RENAMES", "create_request", "list_request", "scheduled_public", "update_request"]

# The body's field -> the Schedule field path it sets (the update_mask path of a PATCH).
_PATHS: dict[str, str] = {
    "name": "title",
    "schedule": "spec.expression",
    "timezone": "spec.timezone",
    "action": "task_template.kind",
    "args": "task_template.input",
}
RENAMES: dict[str, str] = {
    **{f"schedule.{path}": name for name, path in _PATHS.items()},
    **{path: name for name, path in _PATHS.items()},
    "page_size": "limit",
    "page_token": "cursor",
}
"""v1 field path -> the seed's field, for error messages."""


def _schedule(f: Fields, *, create: bool) -> schedule_pb2.Schedule:
    schedule = schedule_pb2.Schedule(title=f.text("name", required=create))
    # "schedule": a crontab line, the one kind the seed shows.
    schedule.spec.kind = enums_pb2.SCHEDULE_KIND_CRON
    schedule.spec.expression = f.text("schedule", required=create)
    schedule.spec.timezone = f.text("timezone")
    schedule.task_template.kind = f.text("action", required=create)
    args = f.obj("args")
    if args is not None:
        schedule.task_template.input.CopyFrom(value_of(args))
    return schedule


def create_request(
    parent: str, body: Mapping[str, Any], request_id: str = ""
) -> tuple[schedule_pb2.CreateScheduleRequest, bool]:
    """POST /v1/scheduled-tasks -> CreateSchedule, and whether it starts enabled."""
    f = Fields(body)
    schedule = _schedule(f, create=True)
    enabled = f.flag("enabled")
    f.check()
    request = schedule_pb2.CreateScheduleRequest(
        parent=parent, schedule=schedule, request_id=request_id
    )
    return request, enabled is not False


def update_request(
    name: str, body: Mapping[str, Any]
) -> tuple[schedule_pb2.UpdateScheduleRequest | None, bool | None]:
    """PATCH /v1/scheduled-tasks/{id}: the update of the present fields (None when only
    `enabled` is given), and `enabled` (None when absent: the state stays)."""
    f = Fields(body)
    schedule = _schedule(f, create=False)
    schedule.name = name
    enabled = f.flag("enabled")
    paths = [path for key, path in _PATHS.items() if key in body]
    for key in sorted(set(body) - set(_PATHS) - {"enabled"}):
        f.violations.add(key, "is not a field of a scheduled task")
    if not paths and enabled is None and not f.violations.items:
        f.violations.add("body", "name at least one field to change")
    f.check()
    if not paths:
        return None, enabled
    request = schedule_pb2.UpdateScheduleRequest(schedule=schedule)
    request.update_mask.paths.extend(paths)
    return request, enabled


def list_request(parent: str, q: Mapping[str, list[str]]) -> schedule_pb2.ListSchedulesRequest:
    """GET /v1/scheduled-tasks: "your" scheduled tasks, those the calling key created."""
    v = Violations()
    request = schedule_pb2.ListSchedulesRequest(parent=parent)
    request.filter.created_by = "me"
    request.page_token, request.page_size = page_of(v, q)
    check(v)
    return request


def scheduled_public(schedule: schedule_pb2.Schedule) -> dict[str, Any]:
    """A v1 Schedule as ScaiGrid's scheduled task."""
    return {
        "id": schedule.name.rsplit("/", 1)[-1],
        "name": schedule.title,
        "schedule": schedule.spec.expression,
        "timezone": schedule.spec.timezone or "UTC",
        "action": schedule.task_template.kind,
        "args": to_json(schedule.task_template.input)
        if schedule.task_template.HasField("input")
        else {},
        "enabled": schedule.state == enums_pb2.SCHEDULE_STATE_ACTIVE,
        "next_run_at": rfc3339(schedule, "next_run_time"),
        "last_run_at": rfc3339(schedule, "last_run_time"),
        "run_count": int(schedule.run_count),
        "created_at": rfc3339(schedule, "create_time"),
        "updated_at": rfc3339(schedule, "update_time"),
    }
