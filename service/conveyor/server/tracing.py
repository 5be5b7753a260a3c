"""OpenTelemetry tracing of one server, off unless the OTEL_* environment turns it on.

`Tracing.from_env` applies the rule in conveyor.client._tracing (OTEL_SDK_DISABLED,
OTEL_TRACES_EXPORTER, OTEL_EXPORTER_OTLP_ENDPOINT) and returns None when tracing is off:
the server then imports nothing of OpenTelemetry and each hot path checks one
attribute for None. When on, it instruments with the opentelemetry-instrumentation
packages: gRPC server calls (an interceptor outside Conveyor's own, so its log lines
see the span), REST and dashboard requests (the Starlette middleware) and every
statement on the pool's connections (psycopg). Schedule fires and webhook deliveries
open their own spans with `span()`.

Tests build `Tracing(provider)` with their own TracerProvider (an in-memory exporter)
and pass it in ServerHooks; only `from_env` sets the process's global provider.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import grpc

from conveyor.client import _tracing
from conveyor.server.logging import get_logger

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span
    from psycopg import AsyncConnection
    from starlette.applications import Starlette

__all__ = ["Tracing"]

_log = get_logger(__name__)

_MAX_LINKS = 128  # the SDK's default limit of links per span

RAW_CURSOR_ATTRIBUTE = "_conveyor_raw_cursor"
"""The traced raw-cursor class a traced connection carries (store/leases.py runs its
statements on a raw cursor, which psycopg's cursor_factory does not cover)."""


class Tracing:
    """The tracer provider of one server and the instrumentation built from it."""

    def __init__(self, provider: TracerProvider, *, owned: bool = False) -> None:
        self.provider = provider
        self.tracer = provider.get_tracer("conveyor.server")
        self._owned = owned
        self._raw_cursor: type[Any] | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Tracing | None:
        """The process's tracing as OTEL_* says, or None when it is off.

        Sets the global tracer provider (libraries in the process then trace into it) and
        owns it: `shutdown` flushes and closes it. Without the `tracing` extra installed,
        or with an exporter no package provides, it logs a warning and returns None: a
        server is not refused for its telemetry.
        """
        try:
            provider = _tracing.provider_from_env(environ, "conveyor")
        except (_tracing.TracingUnavailable, ValueError) as unusable:
            _log.warning("tracing off", reason=str(unusable))
            return None
        if provider is None:
            return None
        from opentelemetry import trace

        trace.set_tracer_provider(provider)
        _log.info("tracing on", exporters=_tracing.exporter_names(environ))
        return cls(provider, owned=True)

    def grpc_interceptor(self) -> grpc.aio.ServerInterceptor:
        """A span per gRPC call, child of the caller's traceparent metadata."""
        from opentelemetry.instrumentation.grpc import aio_server_interceptor

        interceptor: grpc.aio.ServerInterceptor = aio_server_interceptor(  # type: ignore[no-untyped-call]
            tracer_provider=self.provider
        )
        return interceptor

    def instrument_http(self, app: Starlette) -> None:
        """A span per HTTP request (REST, SSE, dashboard, /metrics), child of the request's
        traceparent header; OTEL_PYTHON_STARLETTE_EXCLUDED_URLS leaves paths out."""
        from opentelemetry.instrumentation.starlette import StarletteInstrumentor

        StarletteInstrumentor.instrument_app(app, tracer_provider=self.provider)

    def instrument_connection(self, conn: AsyncConnection[Any]) -> None:
        """A span per statement run on `conn` (the pool calls this for each connection)."""
        from opentelemetry.instrumentation import psycopg as otel_psycopg

        otel_psycopg.PsycopgInstrumentor.instrument_connection(conn, tracer_provider=self.provider)
        conn.cursor_factory = _named_by_operation(conn.cursor_factory)
        if self._raw_cursor is None:
            from psycopg import AsyncRawCursor

            # The same traced factory instrument_connection builds, on a raw cursor.
            self._raw_cursor = otel_psycopg._new_cursor_async_factory(
                tracer_provider=self.provider, base_factory=AsyncRawCursor
            )
        setattr(conn, RAW_CURSOR_ATTRIBUTE, self._raw_cursor)

    def traceparent(self) -> str | None:
        """The W3C traceparent of the current span (None outside any span)."""
        from opentelemetry import trace

        return _tracing.format_traceparent(trace.get_current_span())

    @contextlib.contextmanager
    def span(
        self,
        name: str,
        *,
        parent: str | None = None,
        kind: str = "INTERNAL",
        attributes: Mapping[str, str | int | bool] | None = None,
    ) -> Iterator[Span]:
        """A span made current for the block; `parent` is a traceparent to continue
        (else the current span, if any, is the parent). An exception escaping the block
        is recorded on it and marks it an error."""
        from opentelemetry.trace import SpanKind

        context = _tracing.parent_context(parent) if parent else None
        with self.tracer.start_as_current_span(
            name, context=context, kind=SpanKind[kind], attributes=attributes
        ) as span:
            yield span

    @contextlib.contextmanager
    def span_for_many(self, name: str, traceparents: Sequence[str | None]) -> Iterator[Span]:
        """A span for work done for many callers at once (a batched insert): the child
        of their trace context when they share one, else a root span linked to each."""
        from opentelemetry import trace

        distinct = list(dict.fromkeys(tp for tp in traceparents if tp))
        parent = _tracing.parent_context(distinct[0]) if len(distinct) == 1 else None
        links = []
        for traceparent in distinct[:_MAX_LINKS] if len(distinct) > 1 else ():
            context = _tracing.parent_context(traceparent)
            if context is not None:
                links.append(trace.Link(trace.get_current_span(context).get_span_context()))
        with self.tracer.start_as_current_span(
            name, context=parent, links=links, attributes={"conveyor.batch.size": len(traceparents)}
        ) as span:
            yield span

    def fail(self, span: Span, description: str) -> None:
        """Marks `span` an error that raised nothing (an HTTP error status)."""
        from opentelemetry.trace import Status, StatusCode

        span.set_status(Status(StatusCode.ERROR, description))

    def shutdown(self) -> None:
        """Flushes the spans still buffered and stops exporting (the process's provider
        only: a provider handed in by a test stays the test's)."""
        if self._owned:
            self.provider.shutdown()


def _named_by_operation(traced: type[Any]) -> type[Any]:
    """`traced` (a traced cursor class) sending our statements without their leading
    comment lines: the instrumentation names a span by the statement's first word, which
    would be `--` for most of the named .sql files instead of SELECT, WITH, UPDATE..."""

    class Named(traced):  # type: ignore[misc]
        async def execute(self, query: Any, *args: Any, **kwargs: Any) -> Any:
            return await super().execute(_without_leading_comments(query), *args, **kwargs)

    return Named


def _without_leading_comments(query: Any) -> Any:
    if not isinstance(query, str):
        return query
    while query.startswith("--"):
        end = query.find("\n")
        if end < 0:
            return query
        query = query[end + 1 :].lstrip()
    return query
