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

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2, json_format, timestamp_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from conveyor.server.domain import errors
from conveyor.server.domain.events import KEEPALIVE_TYPE, Events
from conveyor.server.rpc.convert import timestamp
from conveyor.server.rpc.task_messages import error_message, task_message
from conveyor.server.store.events import EventRow, task_from_snapshot
from conveyor.server.streams.hub import Closed, Overflowed, Position
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
        message.time.seconds = delta.days * 86400 + delta.seconds
        message.time.nanos = delta.microseconds * 1000
        if row.data_json and row.data_json != "{}" and row.data:
            message.data.update(row.data)
        snapshot = row.task
        if snapshot is not None:
            fill_task(message.task, snapshot)
        row.message = message
    return message


def snapshot_task_message(snapshot: dict[str, Any]) -> task_pb2.Task:
    """The Task of a snapshot as task_message renders it, by the one mapping
    (rpc/task_messages.py). fill_task is the fast path that streams use; a test holds the
    two equal, so a field added there and not here fails the suite."""
    return task_message(task_from_snapshot(snapshot))


# The streaming path renders every event it sends: through TaskRow and task_message that
# costs about as much as gRPC's own send, so streams fill the Task straight from the
# snapshot's JSON. Same output as snapshot_task_message (tests/test_events.py checks).
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
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
    delta = datetime.fromisoformat(text) - _EPOCH
    field.seconds = delta.days * 86400 + delta.seconds
    field.nanos = delta.microseconds * 1000


def _set_ms(field: duration_pb2.Duration, ms: int) -> None:
    seconds, rest = divmod(int(ms), 1000)
    field.seconds = seconds
    field.nanos = rest * 1_000_000


def fill_task(task: task_pb2.Task, d: dict[str, Any]) -> None:
    project = d.get("project", "")
    prefix = f"projects/{project}/"
    task_id = d.get("id") or "00000000-0000-0000-0000-000000000000"
    task.name = f"{prefix}tasks/{task_id}"
    task.queue = d.get("queue") or ""
    task.kind = d.get("kind") or ""
    if d.get("input") is not None:
        json_format.ParseDict(d["input"], task.input)
    task.priority = d.get("priority") or 0
    task.state = _STATES.get(d.get("state") or "UNSPECIFIED", 0)
    task.state_reason = d.get("state_reason") or ""
    labels = d.get("labels")
    if labels:
        task.labels.update(labels)
    policy = task.retry_policy
    policy.max_attempts = d.get("max_attempts") or 0
    policy.backoff = _BACKOFFS.get(d.get("backoff") or "UNSPECIFIED", 0)
    _set_ms(policy.initial_backoff, d.get("initial_backoff_ms") or 0)
    _set_ms(policy.max_backoff, d.get("max_backoff_ms") or 0)
    task.attempt = d.get("attempt") or 0
    if d.get("schedule_time"):
        _set_time(task.schedule_time, d["schedule_time"])
    _set_ms(task.lease_duration, d.get("lease_duration_ms") or 0)
    task.concurrency_key = d.get("concurrency_key") or ""
    task.concurrency_limit = d.get("concurrency_limit") or 0
    task.requires_approval = bool(d.get("requires_approval"))
    task.correlation_id = d.get("correlation_id") or ""
    if d.get("parent_task"):
        task.parent_task = f"{prefix}tasks/{d['parent_task']}"
    task.root_task = f"{prefix}tasks/{d.get('root_task') or task_id}"
    task.callback_url = d.get("callback_url") or ""
    task.resume_token = d.get("resume_token") or ""
    if d.get("result") is not None:
        json_format.ParseDict(d["result"], task.result)
    task.summary = d.get("summary") or ""
    error = d.get("error")
    if error:
        rendered = error_message(error)
        if rendered is not None:
            task.error.CopyFrom(rendered)
    if d.get("worker"):
        task.worker = f"{prefix}workers/{d['worker']}"
    for name in ("lease_expire_time", "create_time", "start_time", "end_time", "update_time"):
        if d.get(name):
            _set_time(getattr(task, name), d[name])
    if (start := d.get("start_time")) and (end := d.get("end_time")):
        began, ended = datetime.fromisoformat(start), datetime.fromisoformat(end)
        if ended >= began:
            task.run_duration.FromTimedelta(ended - began)
    task.schedule = d.get("schedule") or ""
    task.cancel_requested = bool(d.get("cancel_requested"))
    if d.get("approval_timeout_ms") is not None:
        _set_ms(task.approval_timeout, d["approval_timeout_ms"])
    task.approval_timeout_action = _ACTIONS.get(
        d.get("approval_timeout_action") or "UNSPECIFIED", 0
    )


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
                else:
                    yield event_message(item)
                # Only once the message went out: this is what the client has.
                last = max(last, item.id)
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
