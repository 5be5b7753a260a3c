"""Server-streaming RPCs over HTTP: raw bodies, Server-Sent Events, NDJSON.

- `google.api.HttpBody` streams (ExportTasks) are a file download: the first chunk's
  content_type is the Content-Type, the chunks are the body.
- Message streams (WatchEvents) are `text/event-stream` when the Accept header asks for
  it, else `application/x-ndjson` (one JSON message per line). SSE events carry the
  message's `id` field as `id:` (so a browser's EventSource resumes with Last-Event-ID)
  and its `type` field as `event:`; idle streams get a `: keep-alive` comment every
  `keepalive` seconds, which also notices a client that went away. WatchEvents' own
  keep-alive events (type `conveyor.keepalive`) become `id: <cursor>` plus a comment.

The HTTP status is only decided once the call has shown it was accepted (its first
message, its response headers, or `start_wait` seconds of silence), so an
authentication or argument error still becomes a proper problem+json with its status.
An error after that ends the stream with a last `error` event (SSE) or an
`{"error": problem}` line (NDJSON); a download is cut off (an incomplete chunked
body), never passed off as complete.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.api import httpbody_pb2
from google.protobuf.message import Message

from conveyor.server.domain.events import KEEPALIVE_TYPE
from conveyor.server.gateway.jsonform import dumps, to_json
from conveyor.server.gateway.problems import Problem

__all__ = [
    "EOF",
    "NDJSON",
    "SSE",
    "MessageStream",
    "Started",
    "ndjson",
    "raw_body",
    "sse",
    "wants_sse",
]

SSE = "text/event-stream"
NDJSON = "application/x-ndjson"


class _Eof:
    pass


EOF = _Eof()


@dataclass(frozen=True)
class Started:
    """The call was accepted: `first` is its first message, EOF, or None (not yet read)."""

    first: Message | _Eof | None


class MessageStream:
    """Reads one server-streaming call without ever cancelling a pending read."""

    def __init__(self, call: grpc.aio.UnaryStreamCall[Any, Any]) -> None:
        self.call = call
        self._pending: asyncio.Future[Any] | None = None

    def _read(self) -> asyncio.Future[Any]:
        if self._pending is None:
            self._pending = asyncio.ensure_future(self.call.read())
        return self._pending

    async def start(self, wait: float | None) -> Started:
        """Waits until the call is accepted; raises AioRpcError when it was refused.

        `wait` None waits for the first message however long it takes (a download
        needs its Content-Type from it).
        """
        read = self._read()
        if wait is None:
            return Started(await self.next())
        headers = asyncio.ensure_future(self.call.initial_metadata())
        try:
            await asyncio.wait({read, headers}, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
        finally:
            headers.cancel()
        if read.done() or self.call.done():
            # A refused call ends with headers and status together; reading re-raises it.
            return Started(await self.next())
        return Started(None)

    async def next(self, wait: float | None = None) -> Message | _Eof | None:
        """The next message, EOF at the end, or None when `wait` seconds passed first."""
        read = self._read()
        if wait is not None:
            done, _ = await asyncio.wait({read}, timeout=wait)
            if not done:
                return None
        self._pending = None
        result = await read
        if result is grpc.aio.EOF:
            return EOF
        message: Message = result
        return message

    def cancel(self) -> None:
        self.call.cancel()
        if self._pending is not None:
            self._pending.cancel()
            # Retrieve the outcome so asyncio never reports it as unhandled.
            self._pending.add_done_callback(_swallow)


def _swallow(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


ToProblem = Callable[[grpc.aio.AioRpcError], Problem]


async def raw_body(stream: MessageStream, first: httpbody_pb2.HttpBody) -> AsyncIterator[bytes]:
    """The data of every HttpBody chunk; an error after the start aborts the response."""
    try:
        if first.data:
            yield first.data
        while True:
            chunk = await stream.next()
            if chunk is EOF:
                return
            assert isinstance(chunk, httpbody_pb2.HttpBody)
            if chunk.data:
                yield chunk.data
    finally:
        stream.cancel()


def _field(message: Message, name: str) -> Any:
    field = message.DESCRIPTOR.fields_by_name.get(name)
    return None if field is None else getattr(message, field.name)


def _sse_event(message: Message) -> bytes:
    lines = []
    event_id = _field(message, "id")
    if event_id is not None:
        lines.append(f"id: {event_id}")
    event_type = _field(message, "type")
    if event_type == KEEPALIVE_TYPE:
        # WatchEvents' keep-alive carries the stream's cursor. An SSE block with an id
        # and no data moves the client's Last-Event-ID without dispatching an event.
        lines.append(": keep-alive")
        return ("\n".join(lines) + "\n\n").encode()
    if isinstance(event_type, str) and event_type:
        lines.append(f"event: {event_type}")
    lines.append("data: " + dumps(to_json(message)).decode())
    return ("\n".join(lines) + "\n\n").encode()


async def sse(
    stream: MessageStream,
    started: Started,
    keepalive: float,
    to_problem: ToProblem,
) -> AsyncIterator[bytes]:
    """text/event-stream: one event per message, keep-alive comments while idle."""
    try:
        # A comment first: proxies and browsers see the stream open at once.
        yield b": connected\n\n"
        message = started.first
        while True:
            if message is None:
                try:
                    message = await stream.next(keepalive)
                except grpc.aio.AioRpcError as error:
                    problem = to_problem(error)
                    yield b"event: error\ndata: " + dumps(problem.body) + b"\n\n"
                    return
                if message is None:
                    yield b": keep-alive\n\n"
                    continue
            if message is EOF:
                return
            assert isinstance(message, Message)
            yield _sse_event(message)
            message = None
    finally:
        stream.cancel()


async def ndjson(
    stream: MessageStream, started: Started, to_problem: ToProblem
) -> AsyncIterator[bytes]:
    """application/x-ndjson: one message per line; a failure ends with {"error": ...}."""
    try:
        message = started.first
        while True:
            if message is None:
                try:
                    message = await stream.next()
                except grpc.aio.AioRpcError as error:
                    yield dumps({"error": to_problem(error).body}) + b"\n"
                    return
            if message is EOF:
                return
            assert isinstance(message, Message)
            yield dumps(to_json(message)) + b"\n"
            message = None
    finally:
        stream.cancel()


def wants_sse(accept: str) -> bool:
    return any(part.split(";")[0].strip() == SSE for part in accept.split(","))
