"""The application as the runtime runs it: every service, the interceptor, the bootstrap."""

from __future__ import annotations

from conveyor.server.app import ServerHooks
from conveyor.server.registry import Services

__all__ = ["default_hooks"]


def default_hooks() -> ServerHooks:
    services = Services()
    return ServerHooks(
        register=services.register,
        bootstrap=services.bootstrap,
        interceptors=services.interceptors(),
    )
