"""The gateway's gRPC channel: generic multi-callables built from the descriptors.

The gateway goes through a real gRPC channel (by default to this process's own gRPC
port) rather than calling servicers directly, so REST gets exactly the interceptor's
authentication, authorisation, error mapping and metrics that gRPC gets.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from typing import Any

import grpc
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message_factory import GetMessageClass

from conveyor.client._limits import MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES

__all__ = ["Upstream", "call_metadata", "parse_timeout", "request_id_of"]

# The limits every client uses (conveyor.client._limits): receive what the server may
# send, send what it receives.
_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_RESPONSE_BYTES),
    ("grpc.max_send_message_length", MAX_REQUEST_BYTES),
]
_GRPC_TIMEOUT = re.compile(r"(\d{1,8})([HMSmun])")
_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}


class Upstream:
    """A lazily opened channel to `target` and one multi-callable per method."""

    def __init__(self, target: str) -> None:
        self.target = target
        self._channel: grpc.aio.Channel | None = None
        self._callables: dict[str, Any] = {}

    def _open(self) -> grpc.aio.Channel:
        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(self.target, options=_OPTIONS)
        return self._channel

    def unary(self, method: MethodDescriptor) -> grpc.aio.UnaryUnaryMultiCallable[Any, Any]:
        callable_: grpc.aio.UnaryUnaryMultiCallable[Any, Any] = self._callable(method)
        return callable_

    def server_stream(
        self, method: MethodDescriptor
    ) -> grpc.aio.UnaryStreamMultiCallable[Any, Any]:
        callable_: grpc.aio.UnaryStreamMultiCallable[Any, Any] = self._callable(method)
        return callable_

    def _callable(self, method: MethodDescriptor) -> Any:
        found = self._callables.get(method.full_name)
        if found is None:
            path = f"/{method.containing_service.full_name}/{method.name}"
            request_cls = GetMessageClass(method.input_type)
            response_cls = GetMessageClass(method.output_type)
            factory = (
                self._open().unary_stream if method.server_streaming else self._open().unary_unary
            )
            found = factory(
                path,
                request_serializer=request_cls.SerializeToString,
                response_deserializer=response_cls.FromString,
            )
            self._callables[method.full_name] = found
        return found

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
            self._callables.clear()


def request_id_of(headers: Mapping[str, str]) -> str:
    """The caller's X-Request-Id (up to 128 characters), or a new one, so the logs of
    both sides of the gateway can be joined."""
    return (headers.get("x-request-id") or "").strip()[:128] or uuid.uuid4().hex


def call_metadata(
    authorization: str | None, request_id: str, traceparent: str | None = None
) -> list[tuple[str, str]]:
    """gRPC metadata for a forwarded call: the same bearer key, the request id, and the
    trace context (the caller's traceparent, or the REST span's when tracing is on)."""
    metadata = [("x-request-id", request_id)]
    if authorization is not None:
        metadata.append(("authorization", authorization))
    if traceparent:
        metadata.append(("traceparent", traceparent))
    return metadata


def parse_timeout(headers: Mapping[str, str], default: float | None) -> float | None:
    """The call deadline in seconds from `X-Request-Timeout` or `grpc-timeout`.

    `X-Request-Timeout` is seconds (`2.5`); `grpc-timeout` is gRPC's own form (`500m`,
    `30S`). Raises ValueError for a value that is neither, or not positive.
    """
    raw = headers.get("x-request-timeout")
    if raw is not None:
        try:
            seconds = float(raw)
        except ValueError:
            raise ValueError(f"X-Request-Timeout {raw!r} must be seconds, e.g. 2.5") from None
        if not 0 < seconds < 1e7:
            raise ValueError(f"X-Request-Timeout {raw!r} must be a positive number of seconds")
        return seconds
    raw = headers.get("grpc-timeout")
    if raw is not None:
        matched = _GRPC_TIMEOUT.fullmatch(raw.strip())
        if matched is None or int(matched.group(1)) == 0:
            raise ValueError(f"grpc-timeout {raw!r} must look like 500m or 30S")
        return int(matched.group(1)) * _UNITS[matched.group(2)]
    return default
