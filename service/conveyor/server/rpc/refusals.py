"""The gRPC answer to a call refused by its key's request limits, made cheap.

A flood is mostly refusals, so each one should cost the server little more than the
call gRPC already accepted. The interceptor asks LimitGate before it wraps a call: a call
over its limit gets a bare handler that answers the refusal (no wrapper, no log context,
no in-flight count, no request read, no initial metadata). The limiter raises the same
ResourceExhausted for a (key, class) until its token is due (domain/request_limiter.py);
the status built from it (ErrorInfo REQUEST_LIMITED + RetryInfo, serialized into
grpc-status-details-bin) is kept per (key, class) and reused while the limiter hands back
that same object. Only the call's request id is added to each copy, in the trailers.

Held refusals: however cheap, a refusal still costs the server one gRPC call (a few
hundred us of its event loop), more than a client that ignores RetryInfo spends making
it, so such a client with a few calls in flight could keep a replica busy with nothing
but refusals. A refusal is therefore answered no sooner than HOLD_SECONDS (or its retry
delay, if shorter), which bounds that flood to its calls in flight per hold; waiting
costs one timer. Each hold ends at random within twice that (Holds.take), so that calls
refused together do not all come back together. At most MAX_HELD calls of a key are
held at once; beyond that they are answered at once, so a key cannot grow the server's
memory by holding calls open."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Callable
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

__all__ = [
    "HOLD_SECONDS",
    "MAX_HELD",
    "Holds",
    "LimitGate",
    "RefusalStatuses",
    "TrailedStatus",
    "refusing",
    "request_id",
]

HOLD_SECONDS = 0.25
"""The longest a refusal is held before it is answered."""
MAX_HELD = 100
"""Refusals of one key held at once, at most."""
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


class Holds:
    """How many refusals of each key are being held."""

    def __init__(self, spread: Callable[[], float] = random.random) -> None:
        self._held: dict[str, int] = {}
        self._spread = spread
        """A number in [0, 1): where in its window a hold ends."""

    def take(self, key: str, wait: float) -> float:
        """Seconds to hold one more refusal of `key` whose retry delay is `wait`: 0 when
        MAX_HELD are already held. A positive hold is given back with `release`.

        Between one and two times the shorter of `wait` and HOLD_SECONDS, at random: the
        retry delay is the time until the key's next token, the same instant for every
        call refused meanwhile, so holds of exactly that long answered a flood's callers
        together and they came back together, a burst of calls at every token (16
        callers, 10 tokens/s: a dozen refusals and the admitted page at once, ten times
        a second, which a quiet key's call meeting one waited behind). Spread, they
        come back one at a time, and no refusal is answered before its retry delay."""
        held = self._held.get(key, 0)
        if held >= MAX_HELD or wait <= 0:
            return 0.0
        self._held[key] = held + 1
        shortest = min(wait, HOLD_SECONDS)
        return shortest * (1.0 + self._spread())

    def release(self, key: str) -> None:
        held = self._held.pop(key, 1) - 1
        if held > 0:
            self._held[key] = held


def refusing(
    handler: Handler, status: grpc.Status, hold: float = 0.0, release: Any = None
) -> Handler:
    """A handler of `handler`'s kind that answers `status` after `hold` seconds (then
    calls `release`) and reads nothing: what the interceptor serves a call over its limit
    instead of wrapping the real one."""

    async def refuse(_request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        if hold > 0:
            try:
                await asyncio.sleep(hold)
            finally:
                release()
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
        self.holds = Holds()

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
            status = self.statuses.status(refusal, request_id(metadata))
            wait = refusal.retry_after.total_seconds() if refusal.retry_after else 0.0
            key = principal.key_name
            hold = self.holds.take(key, wait)
            return None, refusing(handler, status, hold, lambda: self.holds.release(key))
        return principal, None
