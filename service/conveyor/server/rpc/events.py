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
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from conveyor.server import errors
from conveyor.server.domain.events import KEEPALIVE_TYPE, Events, Position
from conveyor.server.domain.request_ids import request_hash
from conveyor.server.render.convert import set_timestamp, timestamp
from conveyor.server.render.tasks import fill_task
from conveyor.server.rpc import principal
from conveyor.server.store.event_rows import EventRow, task_from_snapshot
from conveyor.server.streams.hub import Closed, Overflowed
from conveyor.v1 import event_pb2

__all__ = [
    "EventServicer",
    "event_message",
    "keepalive_message",
]

Context = grpc.aio.ServicerContext[Any, Any]


def event_message(row: EventRow) -> event_pb2.Event:
    """The Event of a row, built once however many streams send it."""
    message: event_pb2.Event | None = row.message
    if message is None:
        message = event_pb2.Event(id=row.id, type=row.type, subject=row.subject)
        set_timestamp(message.time, row.time)
        if row.data_json and row.data_json != "{}" and row.data:
            message.data.update(row.data)
        if row.task_json is not None:
            # Parsed here rather than through row.task, which would keep the dict alive
            # as long as the row (a filter on the task has parsed it already, rarely).
            fill_task(message.task, task_from_snapshot(json.loads(row.task_json)))
        row.message = message
    return message


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
        stream = self._events.watch(
            request.parent, request.filter, request.after, me=principal.current().key_name
        )
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
            request.parent,
            request.filter,
            request.page_size,
            request.page_token,
            request.after,
            me=principal.current().key_name,
        )
        return event_pb2.ListEventsResponse(
            events=[event_message(row) for row in page.rows],
            next_page_token=page.next_page_token,
        )

    async def PublishEvent(
        self, request: event_pb2.PublishEventRequest, context: Context
    ) -> event_pb2.Event:
        event = request.event if request.HasField("event") else None
        row = await self._events.publish(
            request.parent, event, request.request_id, request_hash(request)
        )
        return event_message(row)
