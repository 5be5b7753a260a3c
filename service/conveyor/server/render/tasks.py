"""Task rows to Task messages: `fill_task` is the one renderer of a task.

Every path goes through it: GetTask and friends (`task_message`), the event streams
(a snapshot parsed into a TaskRow by store.event_rows.task_from_snapshot) and CreateTask
(`created_message`, a row built from what was inserted, so nothing is read back). It
sets each field in place on the message it is given (no submessage is built and
copied), timestamps by integer arithmetic and JSON values through Struct.update:
rendering is most of what a stream spends per event besides gRPC's send.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from google.protobuf import duration_pb2, json_format, struct_pb2

from conveyor.server.render.convert import set_timestamp, timestamp
from conveyor.server.store.task_inserts import Inserted, NewTask
from conveyor.server.store.task_rows import AttemptRow, TaskRow
from conveyor.v1 import enums_pb2, task_pb2


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
        progress=struct(row.progress),
    )


_STATES: dict[str, Any] = {
    name.removeprefix("TASK_STATE_"): number for name, number in enums_pb2.TaskState.items()
}
_BACKOFFS: dict[str, Any] = {
    name.removeprefix("BACKOFF_"): number for name, number in enums_pb2.Backoff.items()
}
_ACTIONS: dict[str, Any] = {
    name.removeprefix("APPROVAL_ACTION_"): number
    for name, number in enums_pb2.ApprovalAction.items()
}
_ACTIONS[""] = enums_pb2.APPROVAL_ACTION_UNSPECIFIED
_DEPENDENCY_POLICIES: dict[str, Any] = {
    name.removeprefix("DEPENDENCY_FAILURE_POLICY_"): number
    for name, number in enums_pb2.DependencyFailurePolicy.items()
}


def _set_ms(field: duration_pb2.Duration, ms: int) -> None:
    # Seconds and nanos share the sign, as Duration.FromTimedelta normalises them; a zero
    # duration is still set (the field is present, as the contract shows it).
    ms = int(ms)
    if not ms:
        field.SetInParent()
        return
    seconds = ms // 1000 if ms > 0 else -(-ms // 1000)
    field.seconds = seconds
    field.nanos = (ms - seconds * 1000) * 1_000_000


def _set_value(field: struct_pb2.Value, data: Any) -> None:
    """A JSON value (not None) into a Value, as `value` renders it."""
    field.SetInParent()
    if isinstance(data, dict):
        # SetInParent: an empty object or array must still read back as one, not unset.
        field.struct_value.SetInParent()
        field.struct_value.update(data)
    elif isinstance(data, list):
        field.list_value.SetInParent()
        field.list_value.extend(data)
    elif isinstance(data, bool):
        field.bool_value = data
    elif isinstance(data, int | float):
        field.number_value = data
    elif isinstance(data, str):
        field.string_value = data
    else:
        json_format.ParseDict(data, field)


def fill_task(task: task_pb2.Task, row: TaskRow) -> None:
    """Sets every field of `task` that `row` gives (not attempts or blocked_reason).

    Scalars are set only when not empty: proto3 scalars without presence read the same
    either way, and a set costs as much as the test.
    """
    prefix = f"projects/{row.project}/"
    task.name = name = f"{prefix}tasks/{row.id}"
    if row.queue:
        task.queue = row.queue
    if row.kind:
        task.kind = row.kind
    if row.input is not None:
        _set_value(task.input, row.input)
    if row.priority:
        task.priority = row.priority
    task.state = _STATES.get(row.state or "UNSPECIFIED", 0)
    if row.state_reason:
        task.state_reason = row.state_reason
    if row.labels:
        task.labels.update(row.labels)
    policy = task.retry_policy
    if row.max_attempts:
        policy.max_attempts = row.max_attempts
    policy.backoff = _BACKOFFS.get(row.backoff or "UNSPECIFIED", 0)
    _set_ms(policy.initial_backoff, row.initial_backoff_ms or 0)
    _set_ms(policy.max_backoff, row.max_backoff_ms or 0)
    if row.attempt:
        task.attempt = row.attempt
    if row.schedule_time is not None:
        set_timestamp(task.schedule_time, row.schedule_time)
    _set_ms(task.lease_duration, row.lease_duration_ms or 0)
    if row.concurrency_key:
        task.concurrency_key = row.concurrency_key
    if row.concurrency_limit:
        task.concurrency_limit = row.concurrency_limit
    if row.requires_approval:
        task.requires_approval = True
    if row.correlation_id:
        task.correlation_id = row.correlation_id
    if row.parent_task:
        task.parent_task = f"{prefix}tasks/{row.parent_task}"
    # Most tasks are their own root: the name again, without formatting a uuid twice.
    task.root_task = name if row.root_task == row.id else f"{prefix}tasks/{row.root_task}"
    if row.callback_url:
        task.callback_url = row.callback_url
    if row.resume_token:
        task.resume_token = row.resume_token
    if row.result is not None:
        _set_value(task.result, row.result)
    if row.summary:
        task.summary = row.summary
    if error := row.error:
        failure = task.error
        failure.SetInParent()
        failure.type = str(error.get("type", ""))
        failure.message = str(error.get("message", ""))
        details = error.get("details")
        if details is not None:
            failure.details.SetInParent()
            failure.details.update(details)
        failure.retryable = bool(error.get("retryable", False))
    if row.worker:
        task.worker = f"{prefix}workers/{row.worker}"
    if row.lease_expire_time is not None:
        set_timestamp(task.lease_expire_time, row.lease_expire_time)
    if row.create_time is not None:
        set_timestamp(task.create_time, row.create_time)
    start, end = row.start_time, row.end_time
    if start is not None:
        set_timestamp(task.start_time, start)
    if end is not None:
        set_timestamp(task.end_time, end)
        if start is not None and end >= start:
            ran = end - start
            task.run_duration.seconds = ran.days * 86_400 + ran.seconds
            task.run_duration.nanos = ran.microseconds * 1000
    if row.update_time is not None:
        set_timestamp(task.update_time, row.update_time)
    if row.schedule:
        task.schedule = row.schedule
    if row.creator:
        task.creator = row.creator
    if row.cancel_requested:
        task.cancel_requested = True
    if row.approval_timeout_ms is not None:
        _set_ms(task.approval_timeout, row.approval_timeout_ms)
    if row.approval_timeout_action:
        task.approval_timeout_action = _ACTIONS.get(row.approval_timeout_action, 0)
    if row.decide_time is not None:
        approval = task.approval
        approval.approver = row.approver or ""
        approval.approved = bool(row.approved)
        approval.comment = row.approval_comment or ""
        set_timestamp(approval.decide_time, row.decide_time)
    if row.progress is not None:
        task.progress.SetInParent()
        task.progress.update(row.progress)
    if row.progress_time is not None:
        set_timestamp(task.progress_time, row.progress_time)
    if row.execution_timeout_ms is not None:
        _set_ms(task.execution_timeout, row.execution_timeout_ms)
    if row.depends_on:
        # uuids from a row, strings from an event's snapshot: both format alike.
        task.depends_on.extend(f"{prefix}tasks/{d}" for d in row.depends_on)
        task.dependency_failure_policy = _DEPENDENCY_POLICIES.get(
            row.dependency_failure_policy or "", 0
        )


def task_message(
    row: TaskRow,
    attempts: Sequence[AttemptRow] = (),
    blocked_reason: enums_pb2.BlockedReason.ValueType = enums_pb2.BLOCKED_REASON_UNSPECIFIED,
) -> task_pb2.Task:
    """The Task of a row, with its attempts and why it waits (GetTask's answer)."""
    task = task_pb2.Task()
    fill_task(task, row)
    if attempts:
        task.attempts.extend(attempt_message(a) for a in attempts)
    if blocked_reason:
        task.blocked_reason = blocked_reason
    return task


def created_message(
    new: NewTask, inserted: Inserted, source: task_pb2.Task, into: task_pb2.Task | None = None
) -> task_pb2.Task:
    """The Task a create returns, from what was asked and what the insert decided;
    filled into `into` (an empty Task) when given.

    Equal to what GetTask would read back, without reading it back: the row is built
    from the insert, and the input and labels are copied from the request rather than
    decoded from JSON again.
    """
    row = TaskRow(
        project=new.project,
        id=new.id,
        queue=new.queue,
        kind=new.kind,
        input=None,
        priority=new.priority,
        state=new.state,
        state_reason="",
        labels={},
        max_attempts=inserted.max_attempts,
        backoff=inserted.backoff,
        initial_backoff_ms=inserted.initial_backoff_ms,
        max_backoff_ms=inserted.max_backoff_ms,
        attempt=0,
        schedule_time=new.schedule_time,
        lease_duration_ms=new.lease_duration_ms,
        concurrency_key=new.concurrency_key,
        concurrency_limit=new.concurrency_limit,
        requires_approval=new.requires_approval,
        approval_timeout_ms=new.approval_timeout_ms,
        approval_timeout_action=new.approval_timeout_action,
        correlation_id=new.correlation_id,
        parent_task=new.parent_task,
        root_task=inserted.root_task,
        callback_url=new.callback_url,
        resume_token=new.resume_token,
        result=None,
        summary="",
        error=None,
        worker="",
        lease_id=None,
        lease_expire_time=None,
        cancel_requested=False,
        schedule=new.schedule,
        request_id=new.request_id,
        create_time=new.create_time,
        start_time=None,
        end_time=None,
        update_time=inserted.update_time,
        creator=new.creator,
        execution_timeout_ms=inserted.execution_timeout_ms,
    )
    task = task_pb2.Task() if into is None else into
    fill_task(task, row)
    if new.input is not None:  # None also for a JSON null input, which GetTask shows unset
        task.input.CopyFrom(source.input)
    if source.labels:
        task.labels.update(source.labels)
    return task


class CreatedAnswers:
    """The Tasks of many creates (a BatchCreateTasks answer, or every CreateTask a
    servicer answers), each equal to `created_message`'s: what the creates share is
    rendered once into a template and copied in with one CopyFrom; only what differs
    per task (name, root task, times, input, labels) is set on each.

    Filling a Task field by field is ~10-14 us (twenty-odd field sets through the
    protobuf runtime); a copy of the template and seven sets is about half of that.
    Creates that differ in a shared field (another kind, queue, priority...) get a
    template each, up to MAX_TEMPLATES; then the templates start over.
    """

    MAX_TEMPLATES = 64

    def __init__(self) -> None:
        self._templates: dict[tuple[Any, ...], tuple[task_pb2.Task, bytes]] = {}

    def template(self, new: NewTask, inserted: Inserted) -> tuple[task_pb2.Task, bytes]:
        """The template of a create (every field but name, root_task, the times, input
        and labels), and its serialized form (render/created_batch.py)."""
        key = (
            new.project,
            new.queue,
            new.kind,
            new.priority,
            new.state,
            inserted.max_attempts,
            inserted.backoff,
            inserted.initial_backoff_ms,
            inserted.max_backoff_ms,
            new.lease_duration_ms,
            new.concurrency_key,
            new.concurrency_limit,
            new.requires_approval,
            new.approval_timeout_ms,
            new.approval_timeout_action,
            new.correlation_id,
            new.parent_task,
            new.callback_url,
            new.resume_token,
            new.schedule,
            new.creator,
            inserted.execution_timeout_ms,
        )
        found = self._templates.get(key)
        if found is None:
            if len(self._templates) >= self.MAX_TEMPLATES:
                self._templates.clear()  # kept by a servicer: bounded, never stuck full
            # An empty source: the template gets no labels; its input is cleared here.
            template = created_message(new, inserted, _EMPTY_TASK)
            for per_task in (
                "name",
                "root_task",
                "schedule_time",
                "create_time",
                "update_time",
                "input",
            ):
                template.ClearField(per_task)  # set per task
            found = self._templates[key] = (template, template.SerializeToString())
        return found

    def fill(
        self, new: NewTask, inserted: Inserted, source: task_pb2.Task, into: task_pb2.Task
    ) -> None:
        """Fills `into` (an empty Task) with the answer to one create."""
        template = self.template(new, inserted)[0]
        into.CopyFrom(template)
        prefix = f"projects/{new.project}/"
        into.name = f"{prefix}tasks/{new.id}"
        into.root_task = f"{prefix}tasks/{inserted.root_task}"
        set_timestamp(into.schedule_time, new.schedule_time)
        set_timestamp(into.create_time, new.create_time)
        # The insert statement's time: each single create's flush has its own.
        set_timestamp(into.update_time, inserted.update_time)
        if new.input is not None:  # as created_message: a JSON null input shows unset
            into.input.CopyFrom(source.input)
        if source.labels:
            into.labels.update(source.labels)


_EMPTY_TASK = task_pb2.Task()
