"""What the running server hands to its services, loops and hooks."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Protocol

from conveyor.server.settings import Settings
from conveyor.server.store.db import Pool

__all__ = ["AppContext", "BackgroundLoop"]


class BackgroundLoop(Protocol):
    """A maintenance service (scheduler, lease reaper, ...) with a start/stop lifecycle.

    `start` returns once the loop is running; `stop` returns once it has finished its
    current pass and will not touch the pool again.
    """

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


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
