"""The gRPC status of a call refused by its key's request limits, built once per refusal.

A flood is mostly refusals, so each one should cost the server little more than the
call gRPC already accepted. The limiter raises the same ResourceExhausted for a (key,
class) until its token is due (domain/request_limiter.py); here the status built from
it (ErrorInfo REQUEST_LIMITED + RetryInfo, serialized into grpc-status-details-bin) is
kept per (key, class) and reused while the limiter hands back that same object. Only
the call's request id is added to each copy, in the trailers: a refused call sends no
initial metadata (interceptor.py).
"""

from __future__ import annotations

from typing import Any

import grpc

from conveyor.server.errors import ConveyorError
from conveyor.server.rpc.status import to_grpc_status

__all__ = ["RefusalStatuses", "TrailedStatus"]

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
