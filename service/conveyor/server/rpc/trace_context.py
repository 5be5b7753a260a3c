"""The trace context a create stores on its tasks (#22 point 1).

With tracing on, it is the server's span for the call (itself a child of the caller's
`traceparent`), so the trace runs producer -> CreateTask -> handler. With tracing off,
it is the caller's own `traceparent` metadata, passed on unchanged when valid, so a
traced producer and a traced worker still share one trace.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import grpc

from conveyor.client._tracing import valid_traceparent
from conveyor.server.rpc import principal
from conveyor.server.tracing import Tracing

__all__ = ["creator_traceparent"]


def creator_traceparent(
    context: grpc.aio.ServicerContext[Any, Any], tracing: Tracing | None
) -> str | None:
    """The traceparent to store on the tasks this call creates (None: none)."""
    if tracing is not None:
        return tracing.traceparent()
    metadata: Iterable[tuple[str, Any]] | None = principal.call_metadata()
    if metadata is None:
        metadata = context.invocation_metadata()
    for key, value in metadata or ():
        if key == "traceparent":
            return valid_traceparent(value)
    return None
