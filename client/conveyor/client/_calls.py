"""What the client adds to every call: the key, a request id, the caller's trace context
(`traceparent`, when the application traces with OpenTelemetry), a default deadline,
retries for idempotent calls on UNAVAILABLE, and typed errors.

A call is idempotent when its http rule is a GET (Get, List, Preview...), or when
it carries a non-empty `request_id` (CreateTask and friends dedupe on it).

Retries: the first attempt is a plain call, so the common call (which succeeds) costs
nothing extra. Only an idempotent call that failed with UNAVAILABLE goes on to tenacity,
which makes up to RETRY_ATTEMPTS attempts in all, waiting between them at least what the
server's RetryInfo asked for (a database outage, a replica shutting down), else a short
jittered backoff.

A call refused by the key's request limits (RESOURCE_EXHAUSTED, reason REQUEST_LIMITED,
with RetryInfo) is retried too, idempotent or not, as Google's Cloud clients retry quota
errors that carry RetryInfo: the server refuses it before reading the request, so
nothing happened. The wait is the RetryInfo delay plus up to a fifth more, so callers
refused together do not come back together; a delay over MAX_RETRY_AFTER is raised at
once (ResourceExhaustedError, `retry_after` set), as is any other RESOURCE_EXHAUSTED.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import grpc
import tenacity
from google.api import annotations_pb2

from conveyor.client._backoff import exponential_step
from conveyor.client._tracing import current_traceparent
from conveyor.client.errors import (
    REQUEST_LIMITED,
    ConveyorError,
    ResourceExhaustedError,
    UnavailableError,
    from_rpc_error,
)
from conveyor.v1 import (
    command_pb2,
    event_pb2,
    project_pb2,
    queue_pb2,
    schedule_pb2,
    task_service_pb2,
    worker_pb2,
)

RETRY_ATTEMPTS = 4


def _get_methods() -> frozenset[str]:
    methods = set()
    for module in (
        task_service_pb2,
        queue_pb2,
        worker_pb2,
        schedule_pb2,
        command_pb2,
        event_pb2,
        project_pb2,
    ):
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                rule = method.GetOptions().Extensions[annotations_pb2.http]
                if rule.get:
                    methods.add(f"/{service.full_name}/{method.name}")
    return frozenset(methods)


IDEMPOTENT_METHODS = _get_methods()


def is_idempotent(method: str, request: Any) -> bool:
    return method in IDEMPOTENT_METHODS or bool(getattr(request, "request_id", ""))


MAX_RETRY_AFTER = 30.0
"""The longest RetryInfo delay honoured; a server asking for more gets its error raised."""


def sleep(seconds: float) -> None:
    """How the sync client waits between attempts (a seam for tests)."""
    time.sleep(seconds)


async def async_sleep(seconds: float) -> None:
    """How the async client waits between attempts (a seam for tests)."""
    await asyncio.sleep(seconds)


def retry_delay(attempt: int, error: ConveyorError | None = None) -> float:
    """Seconds before retry `attempt` (1 for the first).

    The server's RetryInfo (error.retry_after) when it sent one; else 0.05 s doubling per
    attempt, plus up to 1 s of jitter, capped at 1 s.
    """
    backoff = min(exponential_step(attempt, 0.05, 1.0) + random.uniform(0, 1.0), 1.0)
    hint = error.retry_after if error is not None else None
    if hint is None:
        return backoff
    delay = min(max(hint.total_seconds(), 0.0), MAX_RETRY_AFTER)
    if error is not None and _rate_limited(error):
        delay *= 1.0 + random.uniform(0, 0.2)
    return delay


def _rate_limited(error: ConveyorError) -> bool:
    return isinstance(error, ResourceExhaustedError) and error.reason == REQUEST_LIMITED


def _retryable(error: ConveyorError, idempotent: bool) -> bool:
    hint = error.retry_after
    if _rate_limited(error):
        return hint is not None and hint.total_seconds() <= MAX_RETRY_AFTER
    if not idempotent or not isinstance(error, UnavailableError):
        return False
    return hint is None or hint.total_seconds() <= MAX_RETRY_AFTER


def _wait(state: tenacity.RetryCallState) -> float:
    # Tenacity's attempt 1 is the call's second attempt: the first was made outside.
    assert state.outcome is not None
    error = state.outcome.exception()
    return retry_delay(
        state.attempt_number + 1, error if isinstance(error, ConveyorError) else None
    )


def _retry_idempotent(state: tenacity.RetryCallState) -> bool:
    assert state.outcome is not None
    error = state.outcome.exception()
    return isinstance(error, ConveyorError) and _retryable(error, True)


def _retry_once_refused(state: tenacity.RetryCallState) -> bool:
    """A call that is not idempotent: retried only while it is refused unread."""
    assert state.outcome is not None
    error = state.outcome.exception()
    return isinstance(error, ConveyorError) and _retryable(error, False)


def _retry_for(idempotent: bool) -> Any:
    return _retry_idempotent if idempotent else _retry_once_refused


_SYNC_RETRY = tenacity.Retrying(
    stop=tenacity.stop_after_attempt(RETRY_ATTEMPTS - 1),
    wait=_wait,
    retry=_retry_idempotent,
    reraise=True,
    sleep=lambda seconds: sleep(seconds),
)
_ASYNC_RETRY = tenacity.AsyncRetrying(
    stop=tenacity.stop_after_attempt(RETRY_ATTEMPTS - 1),
    wait=_wait,
    retry=_retry_idempotent,
    reraise=True,
    sleep=lambda seconds: async_sleep(seconds),
)


def _request_id() -> str:
    # 128 random bits as 32 hex digits, like uuid4().hex without building a UUID.
    return os.urandom(16).hex()


def _metadata(
    existing: Sequence[tuple[str, str | bytes]] | None, api_key: str | None
) -> list[tuple[str, Any]]:
    metadata = list(existing or ())
    keys = {k for k, _ in metadata}
    if api_key and "authorization" not in keys:
        metadata.append(("authorization", f"Bearer {api_key}"))
    if "x-request-id" not in keys:
        metadata.append(("x-request-id", _request_id()))
    if "traceparent" not in keys:
        # The application's current span, when it traces (else nothing is imported).
        traceparent = current_traceparent()
        if traceparent is not None:
            metadata.append(("traceparent", traceparent))
    return metadata


class _Details(NamedTuple):
    method: str
    timeout: float | None
    metadata: Any
    credentials: Any
    wait_for_ready: Any
    compression: Any


class _SyncDetails(_Details, grpc.ClientCallDetails):
    pass


class SyncInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    def __init__(self, api_key: str | None, timeout: float | None) -> None:
        self._api_key = api_key
        self._timeout = timeout

    def _details(self, details: grpc.ClientCallDetails, *, unary: bool) -> _SyncDetails:
        timeout = details.timeout if details.timeout is not None or not unary else self._timeout
        return _SyncDetails(
            details.method,
            timeout,
            _metadata(details.metadata, self._api_key),
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )

    def intercept_unary_unary(
        self, continuation: Any, client_call_details: Any, request: Any
    ) -> Any:
        details = self._details(client_call_details, unary=True)
        outcome = continuation(details, request)
        error = outcome.exception()
        if error is None:
            return outcome
        mapped = from_rpc_error(error)
        idempotent = is_idempotent(details.method, request)
        if not _retryable(mapped, idempotent):
            raise mapped
        sleep(retry_delay(1, mapped))

        def attempt() -> Any:
            outcome = continuation(details, request)
            error = outcome.exception()
            if error is not None:
                raise from_rpc_error(error)
            return outcome

        return _SYNC_RETRY.copy(retry=_retry_for(idempotent))(attempt)

    def intercept_unary_stream(
        self, continuation: Any, client_call_details: Any, request: Any
    ) -> Any:
        return continuation(self._details(client_call_details, unary=False), request)

    def intercept_stream_unary(
        self, continuation: Any, client_call_details: Any, request_iterator: Any
    ) -> Any:
        return continuation(self._details(client_call_details, unary=False), request_iterator)

    def intercept_stream_stream(
        self, continuation: Any, client_call_details: Any, request_iterator: Any
    ) -> Any:
        return continuation(self._details(client_call_details, unary=False), request_iterator)


class _AsyncBase:
    def __init__(self, api_key: str | None, timeout: float | None) -> None:
        self._api_key = api_key
        self._timeout = timeout

    def _details(
        self, details: grpc.aio.ClientCallDetails, *, unary: bool
    ) -> grpc.aio.ClientCallDetails:
        timeout = details.timeout if details.timeout is not None or not unary else self._timeout
        return grpc.aio.ClientCallDetails(
            details.method,
            timeout,
            grpc.aio.Metadata(*_metadata(list(details.metadata or ()), self._api_key)),
            details.credentials,
            details.wait_for_ready,
        )


class AsyncUnaryInterceptor(_AsyncBase, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(
        self, continuation: Any, client_call_details: Any, request: Any
    ) -> Any:
        details = self._details(client_call_details, unary=True)
        method = details.method.decode() if isinstance(details.method, bytes) else details.method
        call = await continuation(details, request)
        try:
            return await call
        except grpc.RpcError as error:
            mapped = from_rpc_error(error)
        idempotent = is_idempotent(method, request)
        if not _retryable(mapped, idempotent):
            raise mapped from None
        await async_sleep(retry_delay(1, mapped))

        async def attempt() -> Any:
            call = await continuation(details, request)
            try:
                return await call
            except grpc.RpcError as error:
                raise from_rpc_error(error) from None

        return await _ASYNC_RETRY.copy(retry=_retry_for(idempotent))(attempt)


class AsyncUnaryStreamInterceptor(_AsyncBase, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(
        self, continuation: Any, client_call_details: Any, request: Any
    ) -> Any:
        return await continuation(self._details(client_call_details, unary=False), request)


class AsyncStreamUnaryInterceptor(_AsyncBase, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(
        self, continuation: Any, client_call_details: Any, request_iterator: Any
    ) -> Any:
        return await continuation(self._details(client_call_details, unary=False), request_iterator)


class AsyncStreamStreamInterceptor(_AsyncBase, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(
        self, continuation: Any, client_call_details: Any, request_iterator: Any
    ) -> Any:
        return await continuation(self._details(client_call_details, unary=False), request_iterator)


def async_interceptors(api_key: str | None, timeout: float | None) -> list[Any]:
    """One interceptor per call kind: grpc.aio files an interceptor under the first
    kind it implements only, so one class serving several kinds misses the others."""
    return [
        AsyncUnaryInterceptor(api_key, timeout),
        AsyncUnaryStreamInterceptor(api_key, timeout),
        AsyncStreamUnaryInterceptor(api_key, timeout),
        AsyncStreamStreamInterceptor(api_key, timeout),
    ]
