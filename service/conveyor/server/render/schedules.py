"""Schedule rows to Schedule messages (the one place that mapping lives)."""

from __future__ import annotations

from datetime import datetime, timedelta

from google.protobuf import json_format

from conveyor.server.render.convert import duration, timestamp
from conveyor.server.store.schedules import RunRow, ScheduleRow
from conveyor.v1 import enums_pb2, schedule_pb2

__all__ = ["next_fire_time", "run_message", "schedule_message"]


def next_fire_time(row: ScheduleRow) -> datetime | None:
    """When the schedule will actually fire next, as Schedule.next_run_time shows it.

    The row's next_run_time is the next occurrence, which the scheduler fires from; an
    occurrence that comes due before a snooze ends fires when the snooze ends.
    """
    due, until = row.next_run_time, row.snooze_until
    if due is None or until is None:
        return due
    return max(due, until)


def run_message(project: str, run: RunRow) -> schedule_pb2.ScheduleRun:
    outcome = enums_pb2.TaskState.Value(f"TASK_STATE_{run.task_state}") if run.task_state else 0
    return schedule_pb2.ScheduleRun(
        nominal_time=timestamp(run.nominal_time),
        fire_time=timestamp(run.fire_time),
        task=f"projects/{project}/tasks/{run.task_id}" if run.task_id else "",
        outcome=outcome,  # type: ignore[arg-type]
        note=run.note,
    )


def schedule_message(row: ScheduleRow, runs: list[RunRow] | None = None) -> schedule_pb2.Schedule:
    """The Schedule of a row (with its recent runs when given): every answer and the
    update's merge base go through it."""
    message = schedule_pb2.Schedule(
        name=row.name,
        title=row.title,
        description=row.description,
        spec=schedule_pb2.ScheduleSpec(
            kind=enums_pb2.ScheduleKind.Value(f"SCHEDULE_KIND_{row.kind}"),
            expression=row.expression,
            timezone=row.timezone,
        ),
        state=enums_pb2.ScheduleState.Value(f"SCHEDULE_STATE_{row.state}"),
        notes=row.notes,
        created_by=row.created_by,
        overlap_policy=enums_pb2.OverlapPolicy.Value(f"OVERLAP_POLICY_{row.overlap_policy}"),
        catchup_window=duration(timedelta(milliseconds=row.catchup_window_ms)),
        jitter=duration(timedelta(milliseconds=row.jitter_ms)),
        dst_policy=enums_pb2.DstPolicy.Value(f"DST_POLICY_{row.dst_policy}"),
        next_run_time=timestamp(next_fire_time(row)),
        last_run_time=timestamp(row.last_run_time),
        snooze_until=timestamp(row.snooze_until),
        snooze_reason=row.snooze_reason,
        run_count=row.run_count,
        missed_count=row.missed_count,
        recent_runs=[run_message(row.project, r) for r in runs or []],
        create_time=timestamp(row.create_time),
        update_time=timestamp(row.update_time),
    )
    json_format.ParseDict(row.task_template, message.task_template)
    return message
