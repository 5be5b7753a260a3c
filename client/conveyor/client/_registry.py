"""Handlers by task kind: a Worker's own, and the module-wide ones of `@task`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from conveyor.client._context import TaskContext

Handler = Callable[[TaskContext], Any] | Callable[[TaskContext], Awaitable[Any]]
"""A sync or async function of a TaskContext that returns the result (any JSON)."""

H = TypeVar("H", bound=Handler)


class Registry:
    """Maps task kinds to handlers; registering a second handler for a kind is an error."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    def task(self, kind: str) -> Callable[[H], H]:
        """A decorator that registers its function as the handler of `kind`."""
        if not kind:
            raise ValueError("a handler needs a task kind")

        def register(handler: H) -> H:
            known = self._handlers.get(kind)
            # A module imported twice (as __main__ and by name) registers the "same"
            # function twice; that is no conflict.
            if known is not None and _identity(known) != _identity(handler):
                raise ValueError(f"kind {kind!r} already has a handler: {_identity(known)}")
            self._handlers[kind] = handler
            return handler

        return register

    def get(self, kind: str) -> Handler | None:
        return self._handlers.get(kind)

    def kinds(self) -> list[str]:
        return sorted(self._handlers)


def _identity(handler: Handler) -> str:
    # By source location rather than module name, which differs for __main__.
    code = getattr(handler, "__code__", None)
    name = getattr(handler, "__qualname__", repr(handler))
    if code is None:
        return name
    return f"{name} ({code.co_filename}:{code.co_firstlineno})"


registered = Registry()
"""The module-wide registry that `task` fills and every Worker falls back on."""


def task(kind: str) -> Callable[[H], H]:
    """Registers a handler for `kind` with every Worker of this process.

        from conveyor.client import task

        @task("email.send")
        def send(ctx):
            return {"sent": ctx.input["to"]}

    `conveyor worker --import MODULE` imports the module and runs these handlers.
    A Worker's own `@worker.task(kind)` handlers take precedence over these.
    """
    return registered.task(kind)
