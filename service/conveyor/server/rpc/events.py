"""EventService: thin translation between messages and domain.events.

Keep-alives. WatchEvents answers a stream of Event and nothing else, so an idle stream
is kept alive with Events of type `conveyor.keepalive` (a type PublishEvent refuses):
one opens every stream, and another follows whenever `keepalive_interval` (15 s) passes
without an event. Its `id` is the stream's cursor: every event up to it that matches
the filter has been sent, so a client resumes from the largest id it received, keep-alive
or not, and a stream whose filter matches rarely still advances its cursor. Its `time`
is the server's clock; it has no subject, task or data. gRPC keepalive pings (the
client's channel option) cover the transport underneath.

Errors a watch ends with, each with ErrorInfo metadata `last_event_id` (the id of the
last message sent, to pass as `after` when resuming): RESOURCE_EXHAUSTED (reason
EVENT_BUFFER_OVERFLOW) when the subscriber fell more than its buffer behind the live
events; UNAVAILABLE (reason SHUTTING_DOWN) when the replica stops.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2, json_format, struct_pb2, timestamp_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from conveyor.server import errors
from conveyor.server.domain.events import KEEPALIVE_TYPE, Events, Position
from conveyor.server.render.convert import timestamp
from conveyor.server.render.tasks import task_message
from conveyor.server.store.events import EventRow, task_from_snapshot
from conveyor.server.streams.hub import Closed, Overflowed
from conveyor.v1 import enums_pb2, event_pb2, task_pb2

__all__ = [
    "EventServicer",
    "event_message",
    "fill_task",
    "keepalive_message",
    "snapshot_task_message",
]

Context = grpc.aio.ServicerContext[Any, Any]


def event_message(row: EventRow) -> event_pb2.Event:
    """The Event of a row, built once however many streams send it."""
    message: event_pb2.Event | None = row.message
    if message is None:
        message = event_pb2.Event(id=row.id, type=row.type, subject=row.subject)
        delta = row.time - _EPOCH
        stamp = message.time
        stamp.seconds = delta.days * 86400 + delta.seconds
        stamp.nanos = delta.microseconds * 1000
        if row.data_json and row.data_json != "{}" and row.data:
            message.data.update(row.data)
        if row.task_json is not None:
            # Parsed here rather than through row.task, which would keep the dict alive
            # as long as the row (a filter on the task has parsed it already, rarely).
            fill_task(message.task, json.loads(row.task_json))
        row.message = message
    return message


def snapshot_task_message(snapshot: dict[str, Any]) -> task_pb2.Task:
    """The Task of a snapshot as task_message renders it, by the one mapping
    (render/tasks.py). fill_task is the fast path that streams use; a test holds the
    two equal, so a field added there and not here fails the suite."""
    return task_message(task_from_snapshot(snapshot))


# The streaming path renders every event it sends: through TaskRow and task_message that
# costs about as much as gRPC's own send, so streams fill the Task straight from the
# snapshot's JSON. Same output as snapshot_task_message (tests/test_events.py checks).
# Every field is set in place on the Event's own Task (no submessage is built and
# copied), JSON values go through Struct.update rather than json_format (several times
# faster), and names are bound locally: rendering is most of what a stream spends per
# event besides gRPC's send.
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NIL = "00000000-0000-0000-0000-000000000000"
_fromiso = datetime.fromisoformat
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


def _set_time(field: timestamp_pb2.Timestamp, text: str) -> None:
    delta = _fromiso(text) - _EPOCH
    field.seconds = delta.days * 86400 + delta.seconds
    field.nanos = delta.microseconds * 1000


def _set_ms(field: duration_pb2.Duration, ms: int) -> None:
    # Seconds and nanos share the sign, as Duration.FromTimedelta normalises them; a zero
    # duration is still set (task_message sets it).
    ms = int(ms)
    if not ms:
        field.SetInParent()
        return
    seconds = ms // 1000 if ms > 0 else -(-ms // 1000)
    field.seconds = seconds
    field.nanos = (ms - seconds * 1000) * 1_000_000


def _set_value(field: struct_pb2.Value, data: Any) -> None:
    """A JSON value (not None) into a Value, as render.tasks.value renders it."""
    field.SetInParent()
    if isinstance(data, dict):
        field.struct_value.update(data)
    elif isinstance(data, list):
        field.list_value.extend(data)
    elif isinstance(data, bool):
        field.bool_value = data
    elif isinstance(data, int | float):
        field.number_value = data
    elif isinstance(data, str):
        field.string_value = data
    else:
        json_format.ParseDict(data, field)


def fill_task(task: task_pb2.Task, d: dict[str, Any]) -> None:
    # Scalars are set only when not empty: proto3 scalars without presence read the same
    # either way, and a set costs as much as the test.
    get = d.get
    prefix = f"projects/{get('project', '')}/"
    task_id = get("id") or _NIL
    task.name = f"{prefix}tasks/{task_id}"
    if value := get("queue"):
        task.queue = value
    if value := get("kind"):
        task.kind = value
    if (value := get("input")) is not None:
        _set_value(task.input, value)
    if value := get("priority"):
        task.priority = value
    task.state = _STATES.get(get("state") or "UNSPECIFIED", 0)
    if value := get("state_reason"):
        task.state_reason = value
    if value := get("labels"):
        task.labels.update(value)
    policy = task.retry_policy
    if value := get("max_attempts"):
        policy.max_attempts = value
    policy.backoff = _BACKOFFS.get(get("backoff") or "UNSPECIFIED", 0)
    _set_ms(policy.initial_backoff, get("initial_backoff_ms") or 0)
    _set_ms(policy.max_backoff, get("max_backoff_ms") or 0)
    if value := get("attempt"):
        task.attempt = value
    if value := get("schedule_time"):
        _set_time(task.schedule_time, value)
    _set_ms(task.lease_duration, get("lease_duration_ms") or 0)
    if value := get("concurrency_key"):
        task.concurrency_key = value
    if value := get("concurrency_limit"):
        task.concurrency_limit = value
    if get("requires_approval"):
        task.requires_approval = True
    if value := get("correlation_id"):
        task.correlation_id = value
    if value := get("parent_task"):
        task.parent_task = f"{prefix}tasks/{value}"
    task.root_task = f"{prefix}tasks/{get('root_task') or task_id}"
    if value := get("callback_url"):
        task.callback_url = value
    if value := get("resume_token"):
        task.resume_token = value
    if (value := get("result")) is not None:
        _set_value(task.result, value)
    if value := get("summary"):
        task.summary = value
    if error := get("error"):
        # As error_message renders it.
        failure = task.error
        failure.SetInParent()
        failure.type = str(error.get("type", ""))
        failure.message = str(error.get("message", ""))
        details = error.get("details")
        if details is not None:
            failure.details.SetInParent()
            failure.details.update(details)
        failure.retryable = bool(error.get("retryable", False))
    if value := get("worker"):
        task.worker = f"{prefix}workers/{value}"
    if value := get("lease_expire_time"):
        _set_time(task.lease_expire_time, value)
    if value := get("create_time"):
        _set_time(task.create_time, value)
    if start := get("start_time"):
        _set_time(task.start_time, start)
    if end := get("end_time"):
        _set_time(task.end_time, end)
        if start:
            ran = _fromiso(end) - _fromiso(start)
            if ran.days >= 0:
                run_duration = task.run_duration
                run_duration.seconds = ran.days * 86400 + ran.seconds
                run_duration.nanos = ran.microseconds * 1000
    if value := get("update_time"):
        _set_time(task.update_time, value)
    if value := get("schedule"):
        task.schedule = value
    if get("cancel_requested"):
        task.cancel_requested = True
    if (value := get("approval_timeout_ms")) is not None:
        _set_ms(task.approval_timeout, value)
    if value := get("approval_timeout_action"):
        task.approval_timeout_action = _ACTIONS.get(value, 0)
    if value := get("decide_time"):
        approval = task.approval
        approval.approver = get("approver") or ""
        approval.approved = bool(get("approved"))
        approval.comment = get("approval_comment") or ""
        _set_time(approval.decide_time, value)


def keepalive_message(position: int) -> event_pb2.Event:
    return event_pb2.Event(id=position, type=KEEPALIVE_TYPE, time=timestamp(datetime.now(UTC)))


def _end_unavailable(context: Context, last_event_id: int) -> None:
    """Ends the stream with UNAVAILABLE and the cursor, without aborting: the replica
    is stopping, and its transport may already be gone, where an abort would fail."""
    info = any_pb2.Any()
    info.Pack(
        error_details_pb2.ErrorInfo(
            reason="SHUTTING_DOWN",
            domain=errors.DOMAIN,
            metadata={"last_event_id": str(last_event_id)},
        )
    )
    status = rpc_status.to_status(
        status_pb2.Status(
            code=code_pb2.UNAVAILABLE,
            message="the server is shutting down; resume after last_event_id on another replica",
            details=[info],
        )
    )
    context.set_code(status.code)
    context.set_details(status.details)
    context.set_trailing_metadata(status.trailing_metadata)


class EventServicer:
    def __init__(self, events: Events) -> None:
        self._events = events

    async def WatchEvents(
        self, request: event_pb2.WatchEventsRequest, context: Context
    ) -> AsyncIterator[event_pb2.Event]:
        stream = self._events.watch(request.parent, request.filter, request.after)
        last = request.after
        try:
            async for item in stream:
                if isinstance(item, Position):
                    yield keepalive_message(item.id)
                    last = max(last, item.id)
                    continue
                # A batch is rendered in one go, then sent event by event: rendering them
                # together, away from gRPC's sends, costs markedly less per event.
                messages = [row.message or event_message(row) for row in item]
                for row, message in zip(item, messages, strict=True):
                    yield message
                    # Only once the message went out: this is what the client has.
                    last = row.id
        except Overflowed:
            raise errors.ResourceExhausted(
                "the subscriber fell too far behind the live events; resume after last_event_id",
                reason="EVENT_BUFFER_OVERFLOW",
                metadata={"last_event_id": str(last)},
                retry_after=timedelta(0),
            ) from None
        except Closed:
            _end_unavailable(context, last)
        finally:
            await stream.aclose()  # type: ignore[attr-defined]

    async def ListEvents(
        self, request: event_pb2.ListEventsRequest, context: Context
    ) -> event_pb2.ListEventsResponse:
        page = await self._events.list_page(
            request.parent, request.filter, request.page_size, request.page_token, request.after
        )
        return event_pb2.ListEventsResponse(
            events=[event_message(row) for row in page.rows],
            next_page_token=page.next_page_token,
        )

    async def PublishEvent(
        self, request: event_pb2.PublishEventRequest, context: Context
    ) -> event_pb2.Event:
        event = request.event if request.HasField("event") else None
        return event_message(await self._events.publish(request.parent, event))
