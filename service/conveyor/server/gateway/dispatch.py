"""The REST gateway: HTTP request -> route -> request message -> gRPC call -> HTTP answer.

One endpoint serves every route; the routes come from the contract (routes.py), the
request from transcode.py, the call goes through upstream.py, errors become
problem+json (problems.py) and streams go out through streaming.py.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.api import httpbody_pb2
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse

from conveyor.client._limits import MAX_REQUEST_BYTES, MAX_REST_BODY_BYTES
from conveyor.server.gateway import problems, streaming
from conveyor.server.gateway.jsonform import dumps, to_json
from conveyor.server.gateway.openapi import build_openapi
from conveyor.server.gateway.routes import Binding, MethodNotAllowed, NoRoute, Router, bindings
from conveyor.server.gateway.transcode import BadInput, build_request
from conveyor.server.gateway.upstream import (
    Upstream,
    call_metadata,
    parse_timeout,
    request_id_of,
)
from conveyor.server.rpc.rules import SERVICES

__all__ = ["Gateway", "GatewayOptions"]

_HTTP_BODY = httpbody_pb2.HttpBody.DESCRIPTOR.full_name
# File extensions for downloads, by the Content-Type of the first HttpBody chunk.
_EXTENSIONS = {
    "text/csv": "csv",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "xlsx",
    "application/x-ndjson": "ndjson",
    "application/json": "json",
}


@dataclass(frozen=True)
class GatewayOptions:
    timeout: float = 90.0
    """Deadline (s) of unary calls without X-Request-Timeout / grpc-timeout: above the
    longest long poll (LeaseTasks waits up to 60 s)."""
    stream_timeout: float | None = None
    """Deadline of streaming calls (WatchEvents, exports); None: until the client leaves."""
    keepalive: float = 15.0
    """Seconds between SSE keep-alive comments on an idle stream."""
    stream_start_wait: float = 1.0
    """How long a message stream may stay silent before its 200 headers go out anyway."""
    max_body_bytes: int = MAX_REST_BODY_BYTES
    """Larger request bodies get 413, as do bodies whose request message is over the
    server's MAX_REQUEST_BYTES (conveyor.client._limits)."""


class Gateway:
    """The REST endpoint for every method with a google.api.http rule."""

    def __init__(
        self,
        target: str,
        options: GatewayOptions | None = None,
        services: Sequence[ServiceDescriptor] = SERVICES,
        *,
        traceparent: Callable[[], str | None] | None = None,
    ) -> None:
        self.options = options or GatewayOptions()
        # With tracing on, the REST request's span (Tracing.traceparent) is the gRPC
        # call's parent; off, the caller's traceparent header is passed on as it came.
        self._traceparent = traceparent
        self.router = Router(bindings(services))
        self.upstream = Upstream(target)
        self._openapi: bytes | None = None

    async def close(self) -> None:
        await self.upstream.close()

    def openapi(self) -> bytes:
        """The OpenAPI 3.1 document, generated once from the same bindings."""
        if self._openapi is None:
            self._openapi = dumps(build_openapi(self.router.bindings))
        return self._openapi

    async def handle(self, request: Request) -> Response:
        """Answers one HTTP request (the endpoint of every REST route)."""
        raw_path = _raw_path(request)
        request_id = request_id_of(request.headers)

        def fail(status: int, reason: str, detail: str, **extra: Any) -> Response:
            problem = problems.problem(
                status, reason, detail, raw_path, request_id=request_id, **extra
            )
            return problem_response(problem, request_id)

        try:
            binding, path_values = self.router.resolve(request.method, raw_path)
        except MethodNotAllowed as error:
            allowed = ", ".join(error.allowed)
            return fail(
                405,
                "METHOD_NOT_ALLOWED",
                f"{request.method} is not allowed here; use {allowed}",
                headers={"Allow": allowed},
            )
        except NoRoute:
            return fail(404, "NO_ROUTE", f"no REST method matches {raw_path}; see /openapi.json")
        streaming_call = binding.method.server_streaming
        try:
            body = await self._body(request, binding)
            message = build_request(binding, path_values, request.query_params.multi_items(), body)
            if message.ByteSize() > MAX_REQUEST_BYTES:
                raise _TooLarge
            self._resume_from(request, binding, message)
            deadline = parse_timeout(
                request.headers,
                self.options.stream_timeout if streaming_call else self.options.timeout,
            )
        except BadInput as error:
            return fail(400, "INVALID_ARGUMENT", error.message, violations=error.violations)
        except _TooLarge:
            limit = min(self.options.max_body_bytes, MAX_REQUEST_BYTES)
            return fail(413, "BODY_TOO_LARGE", f"the request is over {limit} bytes")
        except ValueError as error:  # a bad deadline header
            return fail(400, "INVALID_ARGUMENT", str(error))
        except ClientDisconnect:
            return Response(status_code=499)
        metadata = call_metadata(
            request.headers.get("authorization"), request_id, self.trace_context(request)
        )
        call = _Call(self, binding, message, raw_path, request_id)
        if streaming_call:
            return await call.stream(metadata, deadline, request.headers.get("accept", ""))
        return await call.unary(metadata, deadline)

    def trace_context(self, request: Request) -> str | None:
        """The traceparent a call forwarded for `request` carries (the seed APIs' too)."""
        return self._traceparent() if self._traceparent else request.headers.get("traceparent")

    async def _body(self, request: Request, binding: Binding) -> bytes:
        if not binding.body:
            return b""
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.options.max_body_bytes:
                raise _TooLarge
            chunks.append(chunk)
        return b"".join(chunks)

    @staticmethod
    def _resume_from(request: Request, binding: Binding, message: Message) -> None:
        # An EventSource reconnects with the last id it saw; the request's `after`
        # cursor resumes right behind it.
        last = request.headers.get("last-event-id")
        field = message.DESCRIPTOR.fields_by_name.get("after")
        if last is None or field is None or not binding.method.server_streaming:
            return
        try:
            message.after = int(last)  # type: ignore[attr-defined]
        except ValueError:
            raise BadInput.of("Last-Event-ID", f"{last!r} is not an event id") from None


class _TooLarge(Exception):
    pass


def problem_response(problem: problems.Problem, request_id: str) -> Response:
    return Response(
        dumps(problem.body),
        status_code=problem.status,
        media_type=problems.MEDIA_TYPE,
        headers={**problem.headers, "X-Request-Id": request_id},
    )


def _raw_path(request: Request) -> str:
    raw = request.scope.get("raw_path")
    if isinstance(raw, bytes) and raw:
        return raw.decode("latin-1").split("?", 1)[0]
    return str(request.scope["path"])


class _Call:
    """One forwarded call and how its answer goes back."""

    def __init__(
        self, gateway: Gateway, binding: Binding, message: Message, path: str, request_id: str
    ) -> None:
        self.gateway = gateway
        self.binding = binding
        self.message = message
        self.path = path
        self.request_id = request_id

    def to_problem(self, error: grpc.aio.AioRpcError) -> problems.Problem:
        return problems.from_rpc_error(
            error,
            self.path,
            router=self.gateway.router,
            request=self.message,
            request_id=self.request_id,
            binding=self.binding,
        )

    def _error(self, error: grpc.aio.AioRpcError) -> Response:
        return problem_response(self.to_problem(error), self.request_id)

    async def unary(self, metadata: list[tuple[str, str]], deadline: float | None) -> Response:
        method = self.gateway.upstream.unary(self.binding.method)
        try:
            response = await method(self.message, metadata=metadata, timeout=deadline)
        except grpc.aio.AioRpcError as error:
            return self._error(error)
        headers = {"X-Request-Id": self.request_id}
        if isinstance(response, httpbody_pb2.HttpBody):
            return Response(response.data, media_type=response.content_type, headers=headers)
        value: Any = response
        if self.binding.response_body:
            value = getattr(response, self.binding.response_body)
        body = to_json(value) if isinstance(value, Message) else value
        return Response(dumps(body), media_type="application/json", headers=headers)

    async def stream(
        self, metadata: list[tuple[str, str]], deadline: float | None, accept: str
    ) -> Response:
        method = self.gateway.upstream.server_stream(self.binding.method)
        call = method(self.message, metadata=metadata, timeout=deadline)
        stream = streaming.MessageStream(call)
        options = self.gateway.options
        is_body = self.binding.method.output_type.full_name == _HTTP_BODY
        try:
            started = await stream.start(None if is_body else options.stream_start_wait)
        except grpc.aio.AioRpcError as error:
            stream.cancel()
            return self._error(error)
        except BaseException:
            stream.cancel()
            raise
        headers = {"X-Request-Id": self.request_id, "Cache-Control": "no-store"}
        if is_body:
            first = started.first
            if not isinstance(first, httpbody_pb2.HttpBody):
                stream.cancel()
                return Response(status_code=204, headers=headers)
            content_type = first.content_type or "application/octet-stream"
            extension = _EXTENSIONS.get(content_type.split(";")[0].strip(), "bin")
            headers["Content-Disposition"] = (
                f'attachment; filename="{self._file_stem()}.{extension}"'
            )
            return StreamingResponse(
                streaming.raw_body(stream, first), media_type=content_type, headers=headers
            )
        if streaming.wants_sse(accept):
            # Tells nginx-style proxies not to buffer the stream.
            headers["X-Accel-Buffering"] = "no"
            return StreamingResponse(
                streaming.sse(stream, started, options.keepalive, self.to_problem),
                media_type=streaming.SSE,
                headers=headers,
            )
        return StreamingResponse(
            streaming.ndjson(stream, started, self.to_problem),
            media_type=streaming.NDJSON,
            headers=headers,
        )

    def _file_stem(self) -> str:
        # The collection the method works on: `/v1/{parent}/tasks:export` -> `tasks`.
        literals = [s for s in self.binding.template.segments if isinstance(s, str)]
        return literals[-1] if literals else "download"
