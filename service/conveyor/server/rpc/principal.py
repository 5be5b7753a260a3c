"""The authenticated caller of the RPC being served, and the metadata it sent, set by
the interceptor."""

from __future__ import annotations

from collections.abc import Sequence
from contextvars import ContextVar
from typing import Any

from conveyor.server.domain.auth import Principal

_current: ContextVar[Principal] = ContextVar("conveyor_principal")
_metadata: ContextVar[Sequence[tuple[str, Any]] | None] = ContextVar(
    "conveyor_call_metadata", default=None
)


def current() -> Principal:
    """The caller; only valid inside a handler that the interceptor wrapped."""
    return _current.get()


def call_metadata() -> Sequence[tuple[str, Any]] | None:
    """The call's invocation metadata as the interceptor got it; None outside a wrapped
    handler. Read it here rather than from the context: each
    `context.invocation_metadata()` builds the tuples again (~3 us a call)."""
    return _metadata.get()


def set_current(principal: Principal, metadata: Sequence[tuple[str, Any]] | None = None) -> None:
    _current.set(principal)
    _metadata.set(metadata)
