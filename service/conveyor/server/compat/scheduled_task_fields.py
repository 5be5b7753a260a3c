"""Seed 003, the scheduled-tasks API: its task bodies as v1 Schedule requests, and v1
Schedules as its tasks. Pure mapping, no I/O (the routes are scheduled_tasks.py);
docs/compat/003-scheduled-tasks.md explains each choice.

A seed "task" is a Conveyor Schedule: it has a schedule_kind and expression, and each
run creates one Conveyor task of kind `pipeline` whose input is the seed's `payload`.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any, TypeVar

from conveyor.server.compat.body import (
    Fields,
    check,
    comma_list,
    duration_of,
    rfc3339,
    seconds_of,
    value_of,
)
from conveyor.server.errors import Violations
from conveyor.server.gateway.jsonform import to_json
from conveyor.v1 import enums_pb2, schedule_pb2

__all__ = [
    "CREATED_BY_LABEL",
    "DEFAULT_LIMIT",
    "KIND",
    "MAX_OFFSET",
    "RENAMES",
    "create_request",
    "list_request",
    "page_window",
    "snooze_request",
    "task_public",
    "update_request",
]

_E = TypeVar("_E", bound=int)

CREATED_BY_LABEL = "created_by"
"""The task-template label that holds the seed's created_by (the agent's UUID)."""

KIND = "pipeline"
"""The Conveyor task kind of every run: the seed has one kind of work, a pipeline."""
DEFAULT_LIMIT = 50
MAX_OFFSET = 100_000
"""`offset` is walked with v1 page tokens, 5000 at a time; deeper is refused."""
DEFAULT_MAX_RETRIES = 3
DEFAULT_PRIORITY = 5

_KINDS: dict[str, enums_pb2.ScheduleKind.ValueType] = {
    "cron": enums_pb2.SCHEDULE_KIND_CRON,
    "rrule": enums_pb2.SCHEDULE_KIND_RRULE,
    "once": enums_pb2.SCHEDULE_KIND_ONCE,
    "event": enums_pb2.SCHEDULE_KIND_EVENT,
}
_KIND_NAMES = {number: name for name, number in _KINDS.items()}
_BACKOFFS: dict[str, enums_pb2.Backoff.ValueType] = {
    "exponential_jitter": enums_pb2.BACKOFF_EXPONENTIAL_JITTER,
    "linear": enums_pb2.BACKOFF_LINEAR,
    "fixed": enums_pb2.BACKOFF_FIXED,
}
_BACKOFF_NAMES = {number: name for name, number in _BACKOFFS.items()}
_STATUSES: dict[str, enums_pb2.ScheduleState.ValueType] = {
    "active": enums_pb2.SCHEDULE_STATE_ACTIVE,
    "paused": enums_pb2.SCHEDULE_STATE_PAUSED,
    "canceled": enums_pb2.SCHEDULE_STATE_CANCELLED,
}
_STATUS_NAMES = {number: name for name, number in _STATUSES.items()}

# The seed's field -> the Schedule field path it sets (the update_mask path of a PUT).
_PATHS: dict[str, str] = {
    "title": "title",
    "description": "description",
    "schedule_kind": "spec.kind",
    "schedule_expr": "spec.expression",
    "timezone": "spec.timezone",
    "payload": "task_template.input",
    "priority": "task_template.priority",
    "max_retries": "task_template.retry_policy.max_attempts",
    "backoff_strategy": "task_template.retry_policy.backoff",
    "dedupe_key": "task_template.dedupe_policy.key",
    "dedupe_window_seconds": "task_template.dedupe_policy.window",
    "concurrency_key": "task_template.concurrency_key",
}
RENAMES: dict[str, str] = {
    **{f"schedule.{path}": name for name, path in _PATHS.items()},
    **{path: name for name, path in _PATHS.items()},
    "delay": "delay_seconds",
    "page_size": "limit",
    "filter.created_by": "created_by",
    "filter.labels[created_by]": "created_by",
}
"""v1 field path -> the seed's field, for error messages."""


def _enum(f: Fields, key: str, names: Mapping[str, _E]) -> _E | None:
    text = f.text(key)
    if not text:
        return None
    number = names.get(text.lower())
    if number is None:
        f.violations.add(key, f"{text!r} is not one of {', '.join(names)}")
    return number


def _schedule(f: Fields, *, defaults: bool) -> schedule_pb2.Schedule:
    """The Schedule that the body's present fields describe (with the seed's defaults
    for a create)."""
    schedule = schedule_pb2.Schedule(title=f.text("title"), description=f.text("description"))
    kind = _enum(f, "schedule_kind", _KINDS)
    if kind is not None:
        schedule.spec.kind = kind
    schedule.spec.expression = f.text("schedule_expr")
    schedule.spec.timezone = f.text("timezone")
    template = schedule.task_template
    template.kind = KIND
    payload = f.obj("payload", required=defaults)
    if payload is not None:
        template.input.CopyFrom(value_of(payload))
    priority = f.integer("priority")
    template.priority = DEFAULT_PRIORITY if priority is None and defaults else priority or 0
    retries = f.integer("max_retries")
    if retries is None and defaults:
        retries = DEFAULT_MAX_RETRIES
    if retries is not None:
        # Retries after the first run: v1 counts attempts, the first included. A
        # negative count is v1's to refuse (as max_attempts <= 0).
        template.retry_policy.max_attempts = retries + 1 if retries >= 0 else retries
    backoff = _enum(f, "backoff_strategy", _BACKOFFS)
    if backoff is None and defaults:
        backoff = enums_pb2.BACKOFF_EXPONENTIAL_JITTER
    if backoff is not None:
        template.retry_policy.backoff = backoff
    key = f.text("dedupe_key")
    window = f.integer("dedupe_window_seconds")
    if key or window is not None:
        template.dedupe_policy.key = key
        if window is not None:
            template.dedupe_policy.window.CopyFrom(seconds_of(window))
    template.concurrency_key = f.text("concurrency_key")
    # The seed's created_by is the agent's UUID, which v1 has no field for (its
    # Schedule.created_by is the calling key): it is kept as the template label
    # `created_by`, which ListSchedules filters on. Set once, on create; a PUT ignores it.
    agent = f.text("created_by")
    if agent and not _is_uuid(agent):
        f.violations.add("created_by", "must be a UUID (the creating agent's id)")
    elif agent and defaults:
        template.labels[CREATED_BY_LABEL] = agent
    return schedule


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def create_request(
    parent: str, body: Mapping[str, Any], request_id: str = ""
) -> schedule_pb2.CreateScheduleRequest:
    """POST /tasks -> CreateSchedule, with a UUID id (the seed's tasks have UUIDs)."""
    f = Fields(body)
    f.text("title", required=True)
    f.text("schedule_kind", required=True)
    schedule = _schedule(f, defaults=True)
    f.check()
    return schedule_pb2.CreateScheduleRequest(
        parent=parent, schedule_id=str(uuid.uuid4()), schedule=schedule, request_id=request_id
    )


def update_request(name: str, body: Mapping[str, Any]) -> schedule_pb2.UpdateScheduleRequest:
    """PUT /tasks/{id}: only the fields present change (an update_mask of their paths)."""
    f = Fields(body)
    schedule = _schedule(f, defaults=False)
    schedule.name = name
    paths = [path for key, path in _PATHS.items() if key in body]
    unknown = sorted(set(body) - set(_PATHS) - {"created_by"})
    for key in unknown:
        f.violations.add(key, "is not a field of a task")
    if not paths and not unknown:
        f.violations.add("body", "name at least one field to change")
    f.check()
    request = schedule_pb2.UpdateScheduleRequest(schedule=schedule)
    request.update_mask.paths.extend(paths)
    return request


def snooze_request(name: str, body: Mapping[str, Any]) -> schedule_pb2.SnoozeScheduleRequest:
    f = Fields(body)
    seconds = f.integer("delay_seconds", required=True)
    request = schedule_pb2.SnoozeScheduleRequest(name=name, reason=f.text("reason"))
    if seconds is not None:
        # v1 refuses a negative delay or one over 7 days (the seed's "max 1 week").
        request.delay.CopyFrom(seconds_of(seconds))
    f.check()
    return request


def list_request(
    parent: str, q: Mapping[str, list[str]]
) -> tuple[schedule_pb2.ListSchedulesRequest, int, int]:
    """GET /tasks -> ListSchedules, with the seed's limit and offset."""
    v = Violations()
    request = schedule_pb2.ListSchedulesRequest(parent=parent)
    for status in comma_list(q.get("status", [])):
        state = _STATUSES.get(status.lower())
        if state is None:
            v.add("status", f"{status!r} is not one of {', '.join(_STATUSES)}")
        else:
            request.filter.states.append(state)
    for kind in comma_list(q.get("schedule_kind", [])):
        number = _KINDS.get(kind.lower())
        if number is None:
            v.add("schedule_kind", f"{kind!r} is not one of {', '.join(_KINDS)}")
        else:
            request.filter.kinds.append(number)
    created_by = (q.get("created_by") or [""])[-1]
    if created_by and _is_uuid(created_by):
        # The agent UUID a create sent (kept as a template label).
        request.filter.labels[CREATED_BY_LABEL] = created_by
    elif created_by:
        # A key id (as task_public shows it for a schedule made through v1), a key's
        # full name, or `me`.
        request.filter.created_by = (
            created_by
            if created_by == "me" or created_by.startswith("projects/")
            else f"{parent}/apiKeys/{created_by}"
        )
    limit = _number(v, q, "limit", DEFAULT_LIMIT, 1, 5000)
    offset = _number(v, q, "offset", 0, 0, MAX_OFFSET)
    check(v)
    return request, limit, offset


def _number(
    v: Violations, q: Mapping[str, list[str]], key: str, default: int, low: int, high: int
) -> int:
    values = q.get(key)
    if not values:
        return default
    text = values[-1]
    if not text.isdigit() or not low <= int(text) <= high:
        v.add(key, f"must be an integer from {low} to {high}")
        return default
    return int(text)


def page_window(offset: int, limit: int, have: int) -> int:
    """How many more schedules to ask v1 for, to hold offset + limit + 1 (the one
    beyond says whether there is a next page)."""
    return max(min(offset + limit + 1 - have, 5000), 0)


def task_public(schedule: schedule_pb2.Schedule) -> dict[str, Any]:
    """A v1 Schedule as the seed's task."""
    template = schedule.task_template
    policy = template.retry_policy
    dedupe = template.dedupe_policy if template.HasField("dedupe_policy") else None
    return {
        "id": schedule.name.rsplit("/", 1)[-1],
        "title": schedule.title,
        "description": schedule.description,
        "schedule_kind": _KIND_NAMES.get(schedule.spec.kind, ""),
        "schedule_expr": schedule.spec.expression,
        "timezone": schedule.spec.timezone or "UTC",
        "payload": to_json(template.input) if template.HasField("input") else None,
        # The agent UUID a seed create sent; else (made through v1) the creating key's id.
        "created_by": template.labels.get(CREATED_BY_LABEL)
        or schedule.created_by.rsplit("/", 1)[-1]
        or None,
        "priority": template.priority or DEFAULT_PRIORITY,
        "max_retries": max(policy.max_attempts - 1, 0)
        if policy.max_attempts
        else DEFAULT_MAX_RETRIES,
        "backoff_strategy": _BACKOFF_NAMES.get(policy.backoff, "exponential_jitter"),
        "dedupe_key": dedupe.key if dedupe is not None and dedupe.key else None,
        "dedupe_window_seconds": duration_of(dedupe, "window") if dedupe is not None else None,
        "concurrency_key": template.concurrency_key or None,
        "status": _STATUS_NAMES.get(schedule.state, "active"),
        "pause_reason": schedule.notes or None,
        "next_run_at": rfc3339(schedule, "next_run_time"),
        "last_run_at": rfc3339(schedule, "last_run_time"),
        "snoozed_until": rfc3339(schedule, "snooze_until"),
        "snooze_reason": schedule.snooze_reason or None,
        "run_count": int(schedule.run_count),
        "created_at": rfc3339(schedule, "create_time"),
        "updated_at": rfc3339(schedule, "update_time"),
    }
