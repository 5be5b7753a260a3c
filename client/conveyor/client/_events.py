"""Event methods of the clients: publish, list, and a watch that resumes by itself.

    async for event in client.watch_events(types=["task.*"], after=last_id):
        ...

A watch remembers the largest event id it received, keep-alives included (their id is
the stream's cursor), and when the stream breaks (the server went away, a replica shut
down, the subscriber fell behind and got RESOURCE_EXHAUSTED) it reopens the stream with
`after` set to that id, on whichever replica the channel reaches: every event comes once,
in order. Errors that a retry cannot fix (bad filter, permission) are raised.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterable, Iterator, Mapping
from typing import Any

import grpc
from google.protobuf import struct_pb2

from conveyor.client import _requests as req
from conveyor.client._backoff import exponential_step
from conveyor.client.errors import REQUEST_LIMITED, ConveyorError, from_rpc_error
from conveyor.v1 import event_pb2, task_pb2

__all__ = ["KEEPALIVE_TYPE", "AsyncEventMethods", "AsyncEventWatch", "EventMethods", "EventWatch"]

KEEPALIVE_TYPE = "conveyor.keepalive"
RESUMABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
    }
)
"""Codes a watch reconnects after; any other is raised to the caller."""


def _filter(
    event_filter: event_pb2.EventFilter | None,
    types: Iterable[str],
    tasks: Iterable[str],
    task_filter: task_pb2.TaskFilter | None,
) -> event_pb2.EventFilter:
    merged = event_pb2.EventFilter()
    if event_filter is not None:
        merged.CopyFrom(event_filter)
    merged.types.extend(types)
    merged.tasks.extend(tasks)
    if task_filter is not None:
        merged.task_filter.MergeFrom(task_filter)
    return merged


class _Resume:
    """The cursor and reconnect pacing shared by the sync and async watches."""

    def __init__(
        self,
        parent: str,
        event_filter: event_pb2.EventFilter,
        after: int,
        keepalives: bool,
        max_backoff: float,
    ) -> None:
        self.parent = parent
        self.filter = event_filter
        self.last_id = after
        """The cursor: pass it as `after` to continue elsewhere."""
        self.keepalives = keepalives
        self.max_backoff = max_backoff
        self.reconnects = 0
        """Times the stream was reopened (for tests and logs)."""
        self._failures = 0

    def request(self) -> event_pb2.WatchEventsRequest:
        return event_pb2.WatchEventsRequest(
            parent=self.parent, filter=self.filter, after=self.last_id
        )

    def received(self, event: event_pb2.Event) -> bool:
        """Advances the cursor; whether the caller sees this event."""
        self._failures = 0
        self.last_id = max(self.last_id, event.id)
        return self.keepalives or event.type != KEEPALIVE_TYPE

    def failed(self, error: grpc.RpcError) -> float:
        """Seconds to wait before reopening; raises what a retry cannot fix."""
        typed = from_rpc_error(error)
        if typed.code() not in RESUMABLE:
            raise typed from None
        self.reconnects += 1
        self._failures += 1
        step = exponential_step(self._failures, 0.05, self.max_backoff)
        jittered = step / 2 + random.random() * step / 2
        if typed.reason == REQUEST_LIMITED and typed.retry_after is not None:
            # The key's stream budget is spent: reopen when the server said it may.
            return max(typed.retry_after.total_seconds(), jittered)
        if typed.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and self._failures == 1:
            return 0.0  # cut off for being slow: the replay catches up from the table
        return jittered


class AsyncEventWatch:
    """An async iterator of events that reopens its stream after breaks."""

    def __init__(self, stub: Any, resume: _Resume) -> None:
        self._stub = stub
        self._resume = resume
        self._call: Any = None
        self._closed = False
        self._iterator = self._run()

    @property
    def last_id(self) -> int:
        return self._resume.last_id

    @property
    def reconnects(self) -> int:
        return self._resume.reconnects

    def __aiter__(self) -> AsyncEventWatch:
        return self

    async def __anext__(self) -> event_pb2.Event:
        return await anext(self._iterator)

    async def aclose(self) -> None:
        self._closed = True
        if self._call is not None:
            self._call.cancel()
        await self._iterator.aclose()

    async def _run(self) -> AsyncGenerator[event_pb2.Event, None]:
        resume = self._resume
        while not self._closed:
            self._call = self._stub.WatchEvents(resume.request(), wait_for_ready=True)
            try:
                async for event in self._call:
                    if resume.received(event):
                        yield event
                wait = resume.failed(_EndedByServer())
            except grpc.RpcError as error:
                if self._closed:
                    return
                wait = resume.failed(error)
            await asyncio.sleep(wait)


class EventWatch:
    """An iterator of events that reopens its stream after breaks (blocking)."""

    def __init__(self, stub: Any, resume: _Resume) -> None:
        self._stub = stub
        self._resume = resume
        self._call: Any = None
        self._closed = False
        self._iterator = self._run()

    @property
    def last_id(self) -> int:
        return self._resume.last_id

    @property
    def reconnects(self) -> int:
        return self._resume.reconnects

    def __iter__(self) -> EventWatch:
        return self

    def __next__(self) -> event_pb2.Event:
        return next(self._iterator)

    def close(self) -> None:
        self._closed = True
        if self._call is not None:
            self._call.cancel()
        self._iterator.close()

    def _run(self) -> Generator[event_pb2.Event, None, None]:
        resume = self._resume
        while not self._closed:
            self._call = self._stub.WatchEvents(resume.request(), wait_for_ready=True)
            try:
                for event in self._call:
                    if resume.received(event):
                        yield event
                wait = resume.failed(_EndedByServer())
            except grpc.RpcError as error:
                if self._closed:
                    return
                wait = resume.failed(error)
            time.sleep(wait)


class _EndedByServer(ConveyorError):
    """A watch stream that ended without an error: reopened like UNAVAILABLE."""

    def __init__(self) -> None:
        super().__init__(grpc.StatusCode.UNAVAILABLE, "the watch stream ended")


def _event(type: str, data: Mapping[str, Any] | None, subject: str) -> event_pb2.Event:
    event = event_pb2.Event(type=type, subject=subject)
    if data is not None:
        message = struct_pb2.Struct()
        message.update(data)
        event.data.CopyFrom(message)
    return event


class AsyncEventMethods:
    """EventService methods of AsyncClient."""

    events: Any
    project: str

    async def publish_event(
        self,
        type: str,
        data: Mapping[str, Any] | None = None,
        *,
        subject: str = "",
        project: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - the gRPC deadline
    ) -> event_pb2.Event:
        """Appends a custom event (operator role); returns it with its id."""
        request = event_pb2.PublishEventRequest(
            parent=req.parent(project or self.project), event=_event(type, data, subject)
        )
        result: event_pb2.Event = await self.events.PublishEvent(request, timeout=timeout)
        return result

    async def list_events(
        self,
        *,
        filter: event_pb2.EventFilter | None = None,
        types: Iterable[str] = (),
        tasks: Iterable[str] = (),
        task_filter: task_pb2.TaskFilter | None = None,
        after: int = 0,
        page_size: int = 0,
        project: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - the gRPC deadline
    ) -> AsyncIterator[event_pb2.Event]:
        """Every event after `after` matching the filter, oldest first, a page at a time."""
        merged = _filter(filter, types, tasks, task_filter)
        token = ""
        while True:
            page = await self.events.ListEvents(
                event_pb2.ListEventsRequest(
                    parent=req.parent(project or self.project),
                    filter=merged,
                    after=after,
                    page_size=page_size,
                    page_token=token,
                ),
                timeout=timeout,
            )
            for event in page.events:
                yield event
            token = page.next_page_token
            if not token:
                return

    def watch_events(
        self,
        *,
        filter: event_pb2.EventFilter | None = None,
        types: Iterable[str] = (),
        tasks: Iterable[str] = (),
        task_filter: task_pb2.TaskFilter | None = None,
        after: int = 0,
        keepalives: bool = False,
        max_backoff: float = 5.0,
        project: str | None = None,
    ) -> AsyncEventWatch:
        """Events after `after` (0: from now on) matching the filter, then live ones,
        resuming after disconnects; `.last_id` is the cursor. Keep-alives are passed
        through only with `keepalives=True`."""
        resume = _Resume(
            req.parent(project or self.project),
            _filter(filter, types, tasks, task_filter),
            after,
            keepalives,
            max_backoff,
        )
        return AsyncEventWatch(self.events, resume)


class EventMethods:
    """EventService methods of Client."""

    events: Any
    project: str

    def publish_event(
        self,
        type: str,
        data: Mapping[str, Any] | None = None,
        *,
        subject: str = "",
        project: str | None = None,
        timeout: float | None = None,
    ) -> event_pb2.Event:
        """Appends a custom event (operator role); returns it with its id."""
        request = event_pb2.PublishEventRequest(
            parent=req.parent(project or self.project), event=_event(type, data, subject)
        )
        result: event_pb2.Event = self.events.PublishEvent(request, timeout=timeout)
        return result

    def list_events(
        self,
        *,
        filter: event_pb2.EventFilter | None = None,
        types: Iterable[str] = (),
        tasks: Iterable[str] = (),
        task_filter: task_pb2.TaskFilter | None = None,
        after: int = 0,
        page_size: int = 0,
        project: str | None = None,
        timeout: float | None = None,
    ) -> Iterator[event_pb2.Event]:
        """Every event after `after` matching the filter, oldest first, a page at a time."""
        merged = _filter(filter, types, tasks, task_filter)
        token = ""
        while True:
            page = self.events.ListEvents(
                event_pb2.ListEventsRequest(
                    parent=req.parent(project or self.project),
                    filter=merged,
                    after=after,
                    page_size=page_size,
                    page_token=token,
                ),
                timeout=timeout,
            )
            yield from page.events
            token = page.next_page_token
            if not token:
                return

    def watch_events(
        self,
        *,
        filter: event_pb2.EventFilter | None = None,
        types: Iterable[str] = (),
        tasks: Iterable[str] = (),
        task_filter: task_pb2.TaskFilter | None = None,
        after: int = 0,
        keepalives: bool = False,
        max_backoff: float = 5.0,
        project: str | None = None,
    ) -> EventWatch:
        """Events after `after` (0: from now on) matching the filter, then live ones,
        resuming after disconnects; `.last_id` is the cursor. Close it (or break out and
        call close()) to end the stream."""
        resume = _Resume(
            req.parent(project or self.project),
            _filter(filter, types, tasks, task_filter),
            after,
            keepalives,
            max_backoff,
        )
        return EventWatch(self.events, resume)
