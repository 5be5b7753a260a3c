"""The authenticated caller of the RPC being served, set by the interceptor."""

from __future__ import annotations

from contextvars import ContextVar

from conveyor.server.domain.auth import Principal

_current: ContextVar[Principal] = ContextVar("conveyor_principal")


def current() -> Principal:
    """The caller; only valid inside a handler that the interceptor wrapped."""
    return _current.get()


def set_current(principal: Principal) -> None:
    _current.set(principal)
