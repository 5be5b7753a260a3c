"""A schedule row and what every schedule change shares: turning a Schedule message
into a validated row, locking it, the guard on cancelled schedules, its events and its
audit record."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg import AsyncConnection

from conveyor.client._json import message_to_json
from conveyor.server.domain import audit, names, schedule_spec, validate
from conveyor.server.domain.auth import Principal
from conveyor.server.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PreconditionViolation,
    Violations,
)
from conveyor.server.store import event_log
from conveyor.server.store import schedules as schedule_store
from conveyor.server.store.schedules import ScheduleRow
from conveyor.v1 import enums_pb2, schedule_pb2

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


def enum_name(enum: Any, value: int, prefix: str) -> str:
    return str(enum.Name(value)).removeprefix(prefix)


def overlap_policy(value: int, default: str) -> str:
    if value == 0:
        return default
    return enum_name(enums_pb2.OverlapPolicy, value, "OVERLAP_POLICY_")


def dst_policy(value: int) -> str:
    return "RUN_ONCE" if value == 0 else enum_name(enums_pb2.DstPolicy, value, "DST_POLICY_")


def schedule_kind(value: int) -> str:
    return "" if value == 0 else enum_name(enums_pb2.ScheduleKind, value, "SCHEDULE_KIND_")


def _millis(duration: Any, field_path: str, v: Violations, limit: timedelta | None = None) -> int:
    delta: timedelta = duration.ToTimedelta()
    if delta < timedelta(0):
        v.add(field_path, "must not be negative")
    if limit is not None and delta > limit:
        v.add(field_path, f"must be at most {limit}")
    return int(delta.total_seconds() * 1000)


def _check_template(v: Violations, template: schedule_pb2.TaskTemplate, prefix: str) -> None:
    if not template.kind:
        v.add(f"{prefix}.kind", "is required")
    validate.text(v, template.kind, f"{prefix}.kind", 200)
    if template.queue and not names.ID_RE.match(template.queue):
        v.add(f"{prefix}.queue", names.ID_RULE)
    if not 0 <= template.priority <= 9:
        v.add(f"{prefix}.priority", "must be between 1 and 9 (0 means 5)")
    validate.labels(v, dict(template.labels), f"{prefix}.labels")
    validate.url(v, template.callback_url, f"{prefix}.callback_url")
    if template.input.ByteSize() > 1024 * 1024:
        v.add(f"{prefix}.input", "must be at most 1 MiB")


def row_from(
    project: str,
    schedule_id: str,
    message: schedule_pb2.Schedule,
    created_by: str,
    now: datetime,
) -> ScheduleRow:
    """A new ACTIVE row from a Schedule message; INVALID_ARGUMENT names every bad field."""
    v = Violations()
    validate.text(v, message.title, "schedule.title", 200)
    validate.text(v, message.description, "schedule.description", 4000)
    kind = schedule_kind(message.spec.kind)
    spec: schedule_spec.Spec | None = None
    if not message.HasField("spec"):
        v.add("schedule.spec", "is required")
    elif not kind:
        v.add("schedule.spec.kind", "must be CRON, RRULE, ONCE or EVENT")
    else:
        try:
            spec = schedule_spec.parse(
                kind, message.spec.expression, message.spec.timezone, anchor=now
            )
        except InvalidArgument as error:
            v.items.extend(error.violations)
    if not message.HasField("task_template"):
        v.add("schedule.task_template", "is required")
    else:
        _check_template(v, message.task_template, "schedule.task_template")
    catchup = _millis(message.catchup_window, "schedule.catchup_window", v, timedelta(days=366))
    jitter = _millis(message.jitter, "schedule.jitter", v, timedelta(days=1))
    v.raise_if_any()
    assert spec is not None
    dst = dst_policy(message.dst_policy)
    return ScheduleRow(
        project=project,
        id=schedule_id,
        title=message.title,
        description=message.description,
        kind=kind,
        expression=spec.expression,
        timezone=message.spec.timezone or "UTC",
        task_template=message_to_json(message.task_template, preserving_proto_field_name=True),
        state="ACTIVE",
        notes="",
        created_by=created_by,
        overlap_policy=overlap_policy(message.overlap_policy, "SKIP"),
        catchup_window_ms=catchup,
        jitter_ms=jitter,
        dst_policy=dst,
        next_run_time=spec.next_after(now, dst),
        last_run_time=None,
        snooze_until=None,
        snooze_reason="",
        run_count=0,
        missed_count=0,
        buffered_time=None,
        event_cursor=0,
        create_time=now,
        update_time=now,
    )


def occurrence_key(nominal: datetime) -> str:
    return nominal.astimezone(UTC).isoformat()


def spec_of(row: ScheduleRow) -> schedule_spec.Spec:
    return schedule_spec.Spec(
        row.kind, row.expression, schedule_spec.zone(row.timezone), row.create_time
    )


async def locked(conn: AsyncConnection[Any], name: names.Name) -> ScheduleRow:
    """The schedule's row, locked FOR UPDATE; NOT_FOUND when there is none."""
    row = await schedule_store.get(conn, name.project, name.id, for_update=True)
    if row is None:
        raise NotFound(f"{name} does not exist", metadata={"resource": str(name)})
    return row


def writable(row: ScheduleRow) -> None:
    """FAILED_PRECONDITION when the schedule is cancelled (it is read-only then)."""
    if row.state == "CANCELLED":
        raise FailedPrecondition(
            f"{row.name} is cancelled and read-only",
            reason="SCHEDULE_CANCELLED",
            metadata={"resource": row.name},
            violations=[PreconditionViolation("STATE", row.name, "schedule is CANCELLED")],
        )


async def append_event(
    conn: AsyncConnection[Any],
    row: ScheduleRow,
    type: str,
    data: dict[str, Any] | None = None,
) -> None:
    await event_log.append(conn, project=row.project, type=type, subject=row.name, data=data)


async def record_change(
    conn: AsyncConnection[Any],
    server_key: bytes,
    principal: Principal | None,
    verb: int,
    row: ScheduleRow,
    args: dict[str, Any] | None = None,
) -> None:
    """Records the change in the project's audit chain (DESIGN.md: Command)."""
    await audit.record_change(
        conn, server_key, principal, verb, row.name, args or {}, project=row.project
    )
