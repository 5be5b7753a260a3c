"""The database probe: whether this replica's pool can reach PostgreSQL.

While it cannot, gRPC health and /healthz report NOT_SERVING (load balancers send the
traffic elsewhere) and the RPC boundary answers UNAVAILABLE with RetryInfo at once,
instead of letting each call wait for a connection that will not come. The probe pings
every `interval` seconds while the database is up and every `down_interval` while it is
down; the RPC boundary pokes it when a call meets a lost connection, so an outage is
noticed at the first failed call rather than at the next tick.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from conveyor.server.logging import get_logger
from conveyor.server.loops.periodic import PeriodicLoop
from conveyor.server.store import outage
from conveyor.server.store.db import Pool

__all__ = ["DatabaseProbe"]

_log = get_logger(__name__)

Listener = Callable[[bool], Awaitable[None]]
"""Called with the new availability each time it changes."""


class DatabaseProbe(PeriodicLoop):
    name = "database-probe"

    def __init__(
        self,
        pool: Pool,
        *,
        interval: float = 2.0,
        down_interval: float = 0.25,
        timeout: float = 2.0,
    ) -> None:
        super().__init__(interval=interval)
        self._pool = pool
        self._down_interval = down_interval
        self._timeout = timeout
        self._available = True  # the pool opened, so the database was reachable
        self._listeners: list[Listener] = []

    @property
    def available(self) -> bool:
        """Whether the last probe reached the database."""
        return self._available

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def suspect(self) -> None:
        """A call met a lost connection: probe now."""
        self.poke()

    async def delay(self) -> float:
        return self.interval if self._available else self._down_interval

    async def run_once(self) -> None:
        reachable = await outage.ping(self._pool, within=self._timeout)
        if not reachable and self._available:
            # One dead idle connection (a restarted server, a dropped socket) is not an
            # outage: replace the dead ones and ask again before reporting NOT_SERVING.
            await outage.discard_dead(self._pool)
            reachable = await outage.ping(self._pool, within=self._timeout)
        if reachable == self._available:
            if not reachable:
                await outage.discard_dead(self._pool)
            return
        if reachable:
            # Before reporting SERVING: no call should meet a connection that died.
            await outage.discard_dead(self._pool)
            _log.warning("database reachable again; serving")
        else:
            _log.warning("database unreachable; reporting NOT_SERVING")
        self._available = reachable
        for listener in self._listeners:
            await listener(reachable)
