"""OpenTelemetry for Conveyor's processes: off unless the standard OTEL_* environment
turns it on, and then only with the `tracing` extra installed.

The rule (`enabled`), shared by `conveyor serve` and `conveyor worker`:
- OTEL_SDK_DISABLED=true turns it off, whatever else is set;
- else OTEL_TRACES_EXPORTER turns it on with the exporters it names (comma-separated
  entry points of the `opentelemetry_traces_exporter` group: `otlp`, `console`, ...),
  and `none` keeps it off;
- else an OTLP endpoint (OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT)
  turns it on with the `otlp` exporter (gRPC);
- else it is off, and nothing of OpenTelemetry is imported.

The SDK reads the rest of the standard variables itself: OTEL_SERVICE_NAME and
OTEL_RESOURCE_ATTRIBUTES (the service name defaults to the process's own, `conveyor` or
`conveyor-worker`), OTEL_TRACES_SAMPLER(_ARG), OTEL_BSP_* and OTEL_EXPORTER_OTLP_*.

This module imports nothing of OpenTelemetry at import time: the client's base install
has none, and a process with tracing off pays for none.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

__all__ = [
    "TracingUnavailable",
    "current_traceparent",
    "enabled",
    "exporter_names",
    "format_traceparent",
    "global_tracer",
    "parent_context",
    "provider_from_env",
    "valid_traceparent",
    "worker_tracer",
]

_TRUE = {"true", "1", "yes", "on"}

# W3C Trace Context, version 00: version-traceid-spanid-flags, lower-case hex.
_TRACEPARENT = re.compile(r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")


class TracingUnavailable(RuntimeError):
    """The environment asks for tracing but the `tracing` extra is not installed."""


def exporter_names(environ: Mapping[str, str]) -> list[str]:
    """The span exporters the environment asks for; [] means tracing is off."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() in _TRUE:
        return []
    named = environ.get("OTEL_TRACES_EXPORTER", "").strip()
    if named:
        names = [n.strip() for n in named.split(",") if n.strip()]
        return [] if names == ["none"] else [n for n in names if n != "none"]
    for endpoint in ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"):
        if environ.get(endpoint, "").strip():
            return ["otlp"]
    return []


def enabled(environ: Mapping[str, str]) -> bool:
    """Whether the OTEL_* environment turns tracing on (see the module's rule)."""
    return bool(exporter_names(environ))


def provider_from_env(environ: Mapping[str, str], service_name: str) -> TracerProvider | None:
    """An SDK TracerProvider exporting as the environment says, or None when it is off.

    Raises TracingUnavailable when tracing is on but OpenTelemetry's SDK (the `tracing`
    extra) is not installed, and ValueError when an exporter name is unknown.
    """
    names = exporter_names(environ)
    if not names:
        return None
    try:
        from importlib.metadata import entry_points

        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as missing:
        raise TracingUnavailable(
            f"OTEL_* asks for traces but {missing.name} is not installed: install conveyor[tracing]"
        ) from None
    # The SDK reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES (from os.environ);
    # our name only stands in for its "unknown_service".
    resource = Resource.create()
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": service_name}))
    provider = TracerProvider(resource=resource)
    for name in names:
        if name == "otlp":
            name = _OTLP_ENTRY_POINTS.get(_otlp_protocol(environ), "otlp_proto_grpc")
        found = list(entry_points(group="opentelemetry_traces_exporter", name=name))
        if not found:
            raise ValueError(
                f"OTEL_TRACES_EXPORTER names {name!r}, which no installed package provides"
            )
        provider.add_span_processor(BatchSpanProcessor(found[0].load()()))
    return provider


# `otlp` is the SDK's name for the OTLP exporter of OTEL_EXPORTER_OTLP_PROTOCOL's choice.
_OTLP_ENTRY_POINTS = {"grpc": "otlp_proto_grpc", "http/protobuf": "otlp_proto_http"}


def _otlp_protocol(environ: Mapping[str, str]) -> str:
    for variable in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        if environ.get(variable, "").strip():
            return environ[variable].strip()
    return "grpc"


_global_tracers: dict[str, tuple[Any, Tracer]] = {}


def global_tracer(name: str) -> Tracer | None:
    """A tracer from the application's global TracerProvider, or None when the
    application set none (then spans would be thrown away: better not to make them).

    Never imports OpenTelemetry: an application that configured it has imported it.
    """
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return None
    provider = trace.get_tracer_provider()
    if isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
        return None
    cached = _global_tracers.get(name)
    if cached is None or cached[0] is not provider:
        cached = _global_tracers[name] = (provider, provider.get_tracer(name))
    return cached[1]


_WORKER = "conveyor.client.worker"
_worker_tracer: tuple[Any, Tracer] | None = None


def worker_tracer(tracer_provider: Any) -> Tracer | None:
    """The tracer a Worker runs its handlers with: from `tracer_provider`, else from the
    global provider when the application set one; None when there is neither."""
    global _worker_tracer
    if tracer_provider is None:
        return global_tracer(_WORKER)
    cached = _worker_tracer
    if cached is None or cached[0] is not tracer_provider:
        cached = _worker_tracer = (tracer_provider, tracer_provider.get_tracer(_WORKER))
    return cached[1]


def valid_traceparent(value: Any) -> str | None:
    """`value` if it is a W3C traceparent this code can continue, else None.

    Invalid ones are ignored rather than refused, as the W3C spec says a receiver does.
    """
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if not isinstance(value, str):
        return None
    value = value.strip().lower()
    if value[:2] == "00" and len(value) != 55:
        return None
    # A later version may append fields: its first 55 characters read as version 00.
    head = value[:55]
    if not _TRACEPARENT.fullmatch(head) or head[:2] == "ff":
        return None
    if head[3:35] == "0" * 32 or head[36:52] == "0" * 16:
        return None
    return str(head)


def format_traceparent(span: Span) -> str | None:
    """The W3C traceparent naming `span` as the parent, or None for an invalid span."""
    context = span.get_span_context()
    if not context.is_valid:
        return None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def current_traceparent() -> str | None:
    """The traceparent of the application's current span, or None (no span, or no
    OpenTelemetry imported: then this costs one dictionary lookup)."""
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return None
    return format_traceparent(trace.get_current_span())


def parent_context(traceparent: str) -> Context | None:
    """An OpenTelemetry Context whose remote parent is `traceparent` (None if invalid)."""
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    if not traceparent:
        return None
    context = TraceContextTextMapPropagator().extract({"traceparent": traceparent})
    return context or None
