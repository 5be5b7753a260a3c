"""What the running server hands to its services, loops and hooks."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from conveyor.server.settings import Settings
from conveyor.server.store.db import Pool

if TYPE_CHECKING:
    from conveyor.server.tracing import Tracing

__all__ = ["AppContext", "BackgroundLoop", "DatabaseStatus", "InFlight"]


class BackgroundLoop(Protocol):
    """A maintenance service (scheduler, lease reaper, ...) with a start/stop lifecycle.

    `start` returns once the loop is running; `stop` returns once it has finished its
    current pass and will not touch the pool again.
    """

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class DatabaseStatus(Protocol):
    """Whether the pool can reach the database (the database probe answers)."""

    @property
    def available(self) -> bool: ...

    def suspect(self) -> None:
        """A call met a lost connection: check now."""


class _AssumedUp:
    """The status before a probe is plugged in: always available."""

    available = True

    def suspect(self) -> None:
        pass


class InFlight:
    """The contract calls this replica is serving, so shutdown can wait for them to end
    while it keeps answering new ones with UNAVAILABLE."""

    def __init__(self) -> None:
        self.count = 0
        self.arrivals = 0
        self.ending = False
        """Set by end_all(): a call cancelled from now on ends UNAVAILABLE."""
        self._idle = asyncio.Event()
        self._idle.set()
        self._tasks: set[asyncio.Task[Any]] = set()

    def enter(self) -> asyncio.Task[Any] | None:
        """Counts a call; returns the task serving it, to hand back to leave()."""
        self.count += 1
        self.arrivals += 1
        self._idle.clear()
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        return task

    def leave(self, task: asyncio.Task[Any] | None = None) -> None:
        self.count -= 1
        if task is not None:
            self._tasks.discard(task)
        if self.count == 0:
            self._idle.set()

    def end_all(self) -> None:
        """Cancels the calls still in flight shortly before the grace runs out, so each
        ends UNAVAILABLE (the interceptor turns the cancellation into it) rather than
        CANCELLED by gRPC's own stop, which no client retries."""
        self.ending = True
        for task in list(self._tasks):
            task.cancel()

    async def wait_quiet(self, period: float) -> None:
        """Returns once no call has been in flight, and none arrived, for `period` s."""
        while True:
            await self._idle.wait()
            seen = self.arrivals
            await asyncio.sleep(period)
            if self.count == 0 and self.arrivals == seen:
                return


@dataclass
class AppContext:
    """Shared state of one server process.

    Built after migrations ran and the pool opened, before any RPC is served. Hooks may
    append to `loops`; the server starts them before it starts listening and stops them
    after in-flight requests drained, before the pool closes.
    """

    settings: Settings
    pool: Pool
    database_url: str
    server_key: bytes
    """32 random bytes shared by all replicas (stored in server_secrets)."""
    loops: list[BackgroundLoop] = field(default_factory=list)
    shutting_down: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when shutdown begins. Long-lived streams (worker leases, watches) wait on it
    to end cleanly instead of holding the drain open for the whole grace period."""
    database: DatabaseStatus = field(default_factory=_AssumedUp)
    """Whether the pool reaches the database; while it does not, health is NOT_SERVING
    and contract calls are answered UNAVAILABLE."""
    in_flight: InFlight = field(default_factory=InFlight)
    """Contract calls being served (counted by the RPC interceptor)."""
    tracing: Tracing | None = None
    """OpenTelemetry, when the environment turned it on (schedule fires and webhook
    deliveries open spans with it)."""
