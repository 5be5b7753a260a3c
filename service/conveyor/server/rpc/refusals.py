"""The gRPC answer to a call refused by its key's request limits, made cheap.

A flood is mostly refusals, so each one should cost the server little more than the
call gRPC already accepted. The interceptor asks LimitGate before it wraps a call: a call
over its limit gets a bare handler that answers the refusal (no wrapper, no log context,
no in-flight count, no request read, no initial metadata). The limiter raises the same
ResourceExhausted for a (key, class) until its token is due (domain/request_limiter.py);
the status built from it (ErrorInfo REQUEST_LIMITED + RetryInfo, serialized into
grpc-status-details-bin) is kept per (key, class) and reused while the limiter hands back
that same object. Only the call's request id is added to each copy, in the trailers."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import grpc

from conveyor.server.domain.auth import Principal
from conveyor.server.domain.keys import Authenticator
from conveyor.server.domain.request_limiter import RequestLimiter
from conveyor.server.errors import ConveyorError, ResourceExhausted
from conveyor.server.rpc.status import to_grpc_status

if TYPE_CHECKING:
    from conveyor.server.context import AppContext

    Handler = grpc.RpcMethodHandler[Any, Any]

__all__ = ["LimitGate", "RefusalStatuses", "TrailedStatus", "refusing", "request_id"]

_MAX = 10_000
"""Statuses kept before all are forgotten (one per key and class that was refused)."""


class TrailedStatus(grpc.Status):
    """A status with the trailers given."""

    def __init__(self, code: grpc.StatusCode, details: str, trailing_metadata: Any) -> None:
        self.code = code
        self.details = details
        self.trailing_metadata = trailing_metadata


class RefusalStatuses:
    """The status of each (key, class)'s current refusal."""

    def __init__(self) -> None:
        self._made: dict[tuple[str, str], tuple[ConveyorError, grpc.Status]] = {}

    def status(self, refusal: ConveyorError, request_id: str) -> grpc.Status:
        """`refusal`'s status, with `request_id` in its trailers."""
        slot = (refusal.metadata.get("api_key", ""), refusal.metadata.get("method_class", ""))
        made = self._made.get(slot)
        if made is None or made[0] is not refusal:
            if len(self._made) >= _MAX:
                self._made.clear()
            made = self._made[slot] = (refusal, to_grpc_status(refusal))
        status = made[1]
        trailers = (*status.trailing_metadata, ("x-request-id", request_id))
        return TrailedStatus(status.code, status.details, trailers)


def refusing(handler: Handler, status: grpc.Status) -> Handler:
    """A handler of `handler`'s kind that answers `status` at once and reads nothing: what
    the interceptor serves a call over its limit instead of wrapping the real one."""

    async def refuse(_request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        context.set_code(status.code)  # the tracing span reads the code from set_code
        await context.abort_with_status(status)

    kwargs: dict[str, Any] = {
        "request_deserializer": None,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(refuse, **kwargs)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(refuse, **kwargs)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(refuse, **kwargs)
    return grpc.stream_stream_rpc_method_handler(refuse, **kwargs)


def request_id(metadata: Any) -> str:
    """The caller's x-request-id (at most 128 characters), else a new one."""
    for key, value in metadata or ():
        if key == "x-request-id" and value:
            text = value.decode() if isinstance(value, bytes) else str(value)
            return text[:128]
    return uuid.uuid4().hex


class LimitGate:
    """Authenticates a call and takes its token before the interceptor wraps it."""

    def __init__(self, authenticator: Authenticator, limiter: RequestLimiter) -> None:
        self._authenticator = authenticator
        self._limiter = limiter
        self.statuses = RefusalStatuses()

    def admit(
        self, ctx: AppContext | None, handler: Handler, metadata: Any, cls: int
    ) -> tuple[Principal | None, Handler | None]:
        """(the caller, admitted, and None) or (None, a refusing handler). (None, None)
        when it cannot tell without I/O (a key not verified lately) or the replica is
        closed: the wrapped call then decides in its own order, in flight, and takes the
        token itself."""
        if ctx is not None and (ctx.shutting_down.is_set() or not ctx.database.available):
            return None, None
        principal = self._authenticator.known(metadata)
        if principal is None:
            return None, None
        try:
            self._limiter.admit(principal.key_name, principal.limits, cls)
        except ResourceExhausted as refusal:
            return None, refusing(handler, self.statuses.status(refusal, request_id(metadata)))
        return principal, None
