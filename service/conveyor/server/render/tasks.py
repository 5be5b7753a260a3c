"""Task rows to Task messages (the one place that mapping lives)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from google.protobuf import json_format, struct_pb2

from conveyor.server.render.convert import duration, timestamp
from conveyor.server.store.task_rows import AttemptRow, TaskRow
from conveyor.v1 import enums_pb2, task_pb2


def value(data: Any) -> struct_pb2.Value | None:
    """A JSON value as google.protobuf.Value (None leaves the field unset)."""
    if data is None:
        return None
    # Struct.update and direct fields are several times faster than json_format, and
    # every leased or reported task goes through here.
    if isinstance(data, dict):
        message = struct_pb2.Value()
        message.struct_value.update(data)
        return message
    if isinstance(data, list):
        message = struct_pb2.Value()
        message.list_value.extend(data)
        return message
    if isinstance(data, bool):
        return struct_pb2.Value(bool_value=data)
    if isinstance(data, int | float):
        return struct_pb2.Value(number_value=data)
    if isinstance(data, str):
        return struct_pb2.Value(string_value=data)
    message = struct_pb2.Value()
    json_format.ParseDict(data, message)
    return message


def struct(data: dict[str, Any] | None) -> struct_pb2.Struct | None:
    if data is None:
        return None
    message = struct_pb2.Struct()
    message.update(data)
    return message


def error_message(data: dict[str, Any] | None) -> task_pb2.TaskError | None:
    if not data:
        return None
    return task_pb2.TaskError(
        type=str(data.get("type", "")),
        message=str(data.get("message", "")),
        details=struct(data.get("details")),
        retryable=bool(data.get("retryable", False)),
    )


def attempt_message(row: AttemptRow) -> task_pb2.Attempt:
    outcome = f"ATTEMPT_OUTCOME_{row.outcome}" if row.outcome else "ATTEMPT_OUTCOME_UNSPECIFIED"
    return task_pb2.Attempt(
        attempt=row.attempt,
        worker=f"projects/{row.project}/workers/{row.worker}" if row.worker else "",
        lease_id=str(row.lease_id),
        start_time=timestamp(row.start_time),
        end_time=timestamp(row.end_time),
        outcome=enums_pb2.AttemptOutcome.Value(outcome),
        error=error_message(row.error),
    )


def task_message(
    row: TaskRow,
    attempts: Sequence[AttemptRow] = (),
    blocked_reason: enums_pb2.BlockedReason.ValueType = enums_pb2.BLOCKED_REASON_UNSPECIFIED,
) -> task_pb2.Task:
    run_duration = None
    if row.start_time is not None and row.end_time is not None and row.end_time >= row.start_time:
        run_duration = duration(row.end_time - row.start_time)
    approval = None
    if row.decide_time is not None:
        approval = task_pb2.Approval(
            approver=row.approver,
            approved=bool(row.approved),
            comment=row.approval_comment,
            decide_time=timestamp(row.decide_time),
        )
    return task_pb2.Task(
        approval=approval,
        name=row.name,
        queue=row.queue,
        kind=row.kind,
        input=value(row.input),
        priority=row.priority,
        state=enums_pb2.TaskState.Value(f"TASK_STATE_{row.state}"),
        state_reason=row.state_reason,
        labels=row.labels,
        retry_policy=task_pb2.RetryPolicy(
            max_attempts=row.max_attempts,
            backoff=enums_pb2.Backoff.Value(f"BACKOFF_{row.backoff}"),
            initial_backoff=duration(timedelta(milliseconds=row.initial_backoff_ms)),
            max_backoff=duration(timedelta(milliseconds=row.max_backoff_ms)),
        ),
        attempt=row.attempt,
        schedule_time=timestamp(row.schedule_time),
        lease_duration=duration(timedelta(milliseconds=row.lease_duration_ms)),
        concurrency_key=row.concurrency_key or "",
        concurrency_limit=row.concurrency_limit,
        requires_approval=row.requires_approval,
        correlation_id=row.correlation_id,
        parent_task=f"projects/{row.project}/tasks/{row.parent_task}" if row.parent_task else "",
        root_task=f"projects/{row.project}/tasks/{row.root_task}",
        callback_url=row.callback_url,
        resume_token=row.resume_token,
        result=value(row.result),
        summary=row.summary,
        error=error_message(row.error),
        worker=f"projects/{row.project}/workers/{row.worker}" if row.worker else "",
        lease_expire_time=timestamp(row.lease_expire_time),
        schedule=row.schedule,
        create_time=timestamp(row.create_time),
        start_time=timestamp(row.start_time),
        end_time=timestamp(row.end_time),
        update_time=timestamp(row.update_time),
        run_duration=run_duration,
        attempts=[attempt_message(a) for a in attempts],
        blocked_reason=blocked_reason,
        cancel_requested=row.cancel_requested,
        approval_timeout=(
            duration(timedelta(milliseconds=row.approval_timeout_ms))
            if row.approval_timeout_ms is not None
            else None
        ),
        approval_timeout_action=enums_pb2.ApprovalAction.Value(
            f"APPROVAL_ACTION_{row.approval_timeout_action or 'UNSPECIFIED'}"
        ),
    )
