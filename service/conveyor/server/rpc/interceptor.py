"""One server interceptor: request id, authentication, authorisation, error mapping, logs.

Admission: once bound to the running AppContext, a call is refused with UNAVAILABLE (and
RetryInfo) while the replica shuts down or its pool cannot reach the database, before it
touches anything; and an error that says the database connection was lost becomes
UNAVAILABLE rather than INTERNAL. The calls being served are counted in
`ctx.in_flight`, so shutdown waits for them while it keeps refusing new ones.

It wraps each handler instead of only inspecting the call, because authorising by
project needs the request message (for a client stream, its first message) and
error mapping must see what the handler raised. Unary and streaming methods go
through the same path. Methods outside the contract (health, reflection) pass
through untouched.

Request limits: once authenticated, before anything is read or sent, a call takes a token
from its key's bucket for its method's class (domain/request_limiter.py); a stream counts
once. A refusal is the cheapest answer given: a reused status, the request id in its
trailers, no log line, no histogram sample (the limiter counts it; rpc/refusals.py).

Requests are decoded here, not by gRPC (see decoding.py): every wrapped method is
registered without a request deserializer, so a request that cannot be decoded is an
INVALID_ARGUMENT with an ErrorInfo instead of gRPC's bare UNKNOWN. The key is checked
before the bytes are read, so a caller without one learns nothing from them.

Logs: every line logged while a call is handled carries its `request_id` and `method`;
the request id (the caller's x-request-id, else a new one) is echoed in the initial
metadata once admitted (also when a unary call fails otherwise than by its limit); a
refused stream, or a call over its limit, sends it in the trailers.
The call's own line ("rpc", with code and duration) is written at INFO for errors and for
unary calls slower than SLOW_CALL_SECONDS, and at DEBUG for the rest: an access line per
call at INFO cost more server CPU than the rest of the interceptor together.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc
import structlog
from google.protobuf.message import Message

from conveyor.server import errors
from conveyor.server import logging as server_logging
from conveyor.server.context import AppContext
from conveyor.server.domain.auth import Principal, authorize
from conveyor.server.domain.keys import Authenticator
from conveyor.server.domain.request_limiter import REASON as REQUEST_LIMITED
from conveyor.server.domain.request_limiter import RequestLimiter
from conveyor.server.rpc import principal as principal_ctx
from conveyor.server.rpc.decoding import decode
from conveyor.server.rpc.method_classes import class_index
from conveyor.server.rpc.redacting import ResponseRedaction
from conveyor.server.rpc.refusals import LimitGate, RefusalStatuses, TrailedStatus, request_id
from conveyor.server.rpc.rpc_metrics import timer as _timer
from conveyor.server.rpc.status import to_grpc_status
from conveyor.server.store import outage, unstorable
from conveyor.v1 import auth_pb2

log = structlog.get_logger("conveyor.rpc")

SLOW_CALL_SECONDS = 1.0
"""A unary call at least this slow is logged at INFO even when it succeeded."""

if TYPE_CHECKING:
    Handler = grpc.RpcMethodHandler[Any, Any]


def _shutting_down() -> errors.Unavailable:
    return errors.Unavailable(
        "the server is shutting down; retry (another replica will answer)",
        reason="SHUTTING_DOWN",
        retry_after=outage.RETRY_AFTER,
    )


class ConveyorInterceptor(grpc.aio.ServerInterceptor):
    def __init__(
        self,
        authenticator: Authenticator,
        rules: dict[str, auth_pb2.MethodAuth],
        request_types: dict[str, type[Message]],
        limiter: RequestLimiter | None = None,
    ) -> None:
        self._authenticator = authenticator
        self._rules = rules
        self._request_types = request_types
        self._ctx: AppContext | None = None
        self.limiter = limiter or RequestLimiter()
        self._classes = {method: class_index(method) for method in rules}
        self._gate = LimitGate(authenticator, self.limiter)
        self.redaction: ResponseRedaction | None = None
        """Redacts task input in what callers below operator receive (rpc/redacting.py)."""

    def bind(self, ctx: AppContext) -> None:
        """Admit calls by `ctx`'s shutdown flag and database status, and count them."""
        self._ctx = ctx

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        rule = self._rules.get(method)
        request_type = self._request_types.get(method)
        if handler is None or rule is None or request_type is None:
            return handler
        metadata = handler_call_details.invocation_metadata
        cls = self._classes[method]
        # Limited here, before anything per call is made (rpc/refusals.py).
        principal, refused = self._gate.admit(self._ctx, handler, metadata, cls)
        if refused is not None:
            return refused
        wrapped = _Wrapped(self._authenticator, rule, method, metadata, request_type, self._ctx)
        wrapped.limiter, wrapped.method_class = self.limiter, cls
        wrapped.refusals, wrapped.principal = self._gate.statuses, principal
        wrapped.redaction = self.redaction
        return wrapped.wrap(handler)


class _Wrapped:
    """The per-call state of one wrapped handler."""

    limiter: RequestLimiter
    method_class: int  # an index of request_limits.CLASSES
    refusals: RefusalStatuses
    principal: Principal | None  # authenticated and admitted by the interceptor
    unary = False
    echoing: asyncio.Future[None] | None = None  # a unary call's echo, sent alongside it

    def __init__(
        self,
        authenticator: Authenticator,
        rule: auth_pb2.MethodAuth,
        method: str,
        metadata: Any,
        request_type: type[Message],
        ctx: AppContext | None,
    ) -> None:
        self.ctx = ctx
        self.authenticator = authenticator
        self.rule = rule
        self.method = method
        self.metadata = metadata
        self.request_type = request_type
        self.redaction: ResponseRedaction | None = None
        self.redact: Callable[[Message], Awaitable[Message]] | None = None

    def wrap(self, handler: Handler) -> Handler:
        # No request deserializer: the calls below get the raw bytes and decode them.
        kwargs = {
            "request_deserializer": None,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(self._unary(handler.unary_unary), **kwargs)
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._server_stream(handler.unary_stream), **kwargs
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                self._client_stream(handler.stream_unary), **kwargs
            )
        assert handler.stream_stream is not None
        return grpc.stream_stream_rpc_method_handler(self._bidi(handler.stream_stream), **kwargs)

    def _decode(self, raw: bytes) -> Message:
        return decode(self.request_type.FromString, raw, self.request_type.DESCRIPTOR.full_name)

    async def _limited(self) -> Principal:
        """Authenticates, then takes a token from the key's bucket (or raises its refusal),
        unless the interceptor did both."""
        if self.principal is not None:
            return self.principal
        principal = await self.authenticator.authenticate(self.metadata)
        self.limiter.admit(principal.key_name, principal.limits, self.method_class)
        return principal

    async def _admit(self, raw: bytes, principal: Principal | None = None) -> Message:
        """Authenticates (unless given `_limited`'s principal), decodes, authorises."""
        if principal is None:
            principal = await self._limited()
        request = self._decode(raw)
        authorize(principal, self.rule, request)
        principal_ctx.set_current(principal, self.metadata)
        structlog.contextvars.bind_contextvars(principal=principal.key_name)
        self.redact = None if self.redaction is None else self.redaction.for_caller(principal)
        return request

    def _begin(self) -> float:
        structlog.contextvars.clear_contextvars()
        self.request_id = request_id(self.metadata)
        self.echoed = False
        structlog.contextvars.bind_contextvars(request_id=self.request_id, method=self.method)
        self.task = self.ctx.in_flight.enter() if self.ctx is not None else None
        return time.perf_counter()

    async def _echo_request_id(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        """The call's request id (the caller's x-request-id, or one made up) goes back in
        the initial metadata, so a caller can quote it for the server's log lines. A unary
        call sends it alongside its handler, whose database work then need not wait for it.

        Streams call this only once admitted: the REST gateway takes headers before any
        message as "accepted" and answers 200, so a refusal must not send them first (it
        would race its own status); _fail puts a refused stream's id in its trailers."""
        await context.send_initial_metadata((("x-request-id", self.request_id),))
        self.echoed = True

    def _end(self) -> None:
        if self.ctx is not None:
            self.ctx.in_flight.leave(self.task)

    def _ended(self, cancelled: asyncio.CancelledError) -> Exception:
        """The shutdown's end cancelled this call (InFlight.end_all): it ends UNAVAILABLE,
        which clients retry elsewhere. Any other cancellation propagates."""
        if self.ctx is None or not self.ctx.in_flight.ending:
            raise cancelled
        return _shutting_down()

    def _open(self) -> None:
        """Refuses the call while the replica stops or cannot reach its database."""
        ctx = self.ctx
        if ctx is None:
            return
        if ctx.shutting_down.is_set():
            raise _shutting_down()
        if not ctx.database.available:
            raise outage.unavailable()

    async def _fail(
        self, context: grpc.aio.ServicerContext[Any, Any], error: Exception, started: float
    ) -> None:
        if isinstance(error, errors.ResourceExhausted) and error.reason == REQUEST_LIMITED:
            context.set_code(grpc.StatusCode.RESOURCE_EXHAUSTED)  # for the tracing span
            await context.abort_with_status(self.refusals.status(error, self.request_id))
        if not isinstance(error, errors.ConveyorError):
            lost = outage.unavailable_from(error)
            unstorable_value = unstorable.invalid_from(error)
            if unstorable_value is not None:
                error = unstorable_value
            elif lost is not None:
                log.warning("rpc.database_unavailable", error=str(error))
                if self.ctx is not None:
                    self.ctx.database.suspect()
                error = lost
            else:
                log.exception("rpc.internal_error")
                error = errors.Internal("internal error; see the server log for the request id")
        status = to_grpc_status(error)
        self._done(status.code, started, stream=False, reason=error.reason)
        if not self.echoed and self.unary:  # an echo in flight ends first: never two
            await (self.echoing or self._echo_request_id(context))
        elif not self.echoed:
            # A refused stream sent no headers (see _echo_request_id): its request id
            # travels in the trailers, with the status.
            status = TrailedStatus(
                status.code,
                status.details,
                (*status.trailing_metadata, ("x-request-id", self.request_id)),
            )
        context.set_code(status.code)  # the tracing span reads the code from set_code
        await context.abort_with_status(status)

    def _done(self, code: grpc.StatusCode, started: float, *, stream: bool, **extra: Any) -> None:
        elapsed = time.perf_counter() - started
        _timer(self.method, code.name).observe(elapsed)
        failed = code is not grpc.StatusCode.OK
        if failed or (not stream and elapsed >= SLOW_CALL_SECONDS):
            log.info("rpc", code=code.name, duration_ms=round(elapsed * 1000, 3), **extra)
        elif server_logging.debug_enabled():
            log.debug("rpc", code=code.name, duration_ms=round(elapsed * 1000, 3), **extra)

    def _unary(self, behavior: Any) -> Any:
        async def call(raw: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            started = self._begin()
            self.unary = True
            try:
                self._open()
                principal = await self._limited()
                self.echoing = echo = asyncio.ensure_future(self._echo_request_id(context))
                echo.add_done_callback(lambda e: e.cancelled() or e.exception())  # retrieved
                request = await self._admit(raw, principal)
                response = await behavior(request, context)
                if self.redact is not None:
                    response = await self.redact(response)
                await echo  # the headers precede the answer
            except grpc.aio.AbortError:
                raise
            except asyncio.CancelledError as cancelled:
                await self._fail(context, self._ended(cancelled), started)
                raise AssertionError("unreachable: abort raises") from cancelled
            except Exception as error:
                await self._fail(context, error, started)
                raise AssertionError("unreachable: abort raises") from error
            finally:
                self._end()
            self._done(grpc.StatusCode.OK, started, stream=False)
            return response

        return call

    def _server_stream(self, behavior: Any) -> Any:
        async def call(
            raw: bytes, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            started = self._begin()
            try:
                self._open()
                request = await self._admit(raw)
                await self._echo_request_id(context)
                async for response in behavior(request, context):
                    yield response if self.redact is None else await self.redact(response)
            except grpc.aio.AbortError:
                raise
            except asyncio.CancelledError as cancelled:
                await self._fail(context, self._ended(cancelled), started)
                raise AssertionError("unreachable: abort raises") from cancelled
            except Exception as error:
                await self._fail(context, error, started)
            else:
                self._done(grpc.StatusCode.OK, started, stream=True)
            finally:
                self._end()

        return call

    async def _first_admitted(self, requests: AsyncIterator[bytes]) -> AsyncIterator[Message]:
        """Authorises on the first message of a client stream, then replays it and
        decodes the rest as they come."""
        try:
            raw = await anext(requests)
        except StopAsyncIteration:
            raise errors.InvalidArgument("the stream ended before its first message") from None
        first = await self._admit(raw)

        async def replay() -> AsyncIterator[Message]:
            yield first
            async for raw in requests:
                yield self._decode(raw)

        return replay()

    def _client_stream(self, behavior: Any) -> Any:
        async def call(
            requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[Any, Any]
        ) -> Any:
            started = self._begin()
            try:
                self._open()
                await self.authenticator.authenticate(self.metadata)
                admitted = await self._first_admitted(requests)
                await self._echo_request_id(context)
                response = await behavior(admitted, context)
            except grpc.aio.AbortError:
                raise
            except asyncio.CancelledError as cancelled:
                await self._fail(context, self._ended(cancelled), started)
                raise AssertionError("unreachable: abort raises") from cancelled
            except Exception as error:
                await self._fail(context, error, started)
                raise AssertionError("unreachable: abort raises") from error
            finally:
                self._end()
            self._done(grpc.StatusCode.OK, started, stream=True)
            return response

        return call

    def _bidi(self, behavior: Any) -> Any:
        async def call(
            requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            started = self._begin()
            try:
                self._open()
                # Authenticate before reading anything, so a keyless client is
                # refused even if it never sends.
                await self.authenticator.authenticate(self.metadata)
                admitted = await self._first_admitted(requests)
                await self._echo_request_id(context)
                async for response in behavior(admitted, context):
                    yield response
            except grpc.aio.AbortError:
                raise
            except asyncio.CancelledError as cancelled:
                await self._fail(context, self._ended(cancelled), started)
                raise AssertionError("unreachable: abort raises") from cancelled
            except Exception as error:
                await self._fail(context, error, started)
            else:
                self._done(grpc.StatusCode.OK, started, stream=True)
            finally:
                self._end()

        return call
