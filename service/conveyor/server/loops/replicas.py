"""The replica registry: how many server processes are live, for the request limiter.

Each replica (each process of `conveyor serve --processes N` too) beats every
`interval` seconds into the `replicas` table and reads back how many replicas beat
within `ttl` (three intervals); the limiter then enforces 1/N of every key's budget
(domain/request_limiter.py). The count is refreshed here, never per call. A replica
that stops deletes its row; one that crashed is pruned once its beats are older
than `ttl`, so until then the others enforce slightly smaller shares, never larger.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

from conveyor.server.logging import get_logger
from conveyor.server.loops.periodic import PeriodicLoop
from conveyor.server.store import replicas
from conveyor.server.store.db import Pool

__all__ = ["ReplicaRegistry"]

_log = get_logger(__name__)


class ReplicaRegistry(PeriodicLoop):
    name = "replicas"

    def __init__(
        self, pool: Pool, on_count: Callable[[int], None], *, interval: float = 5.0
    ) -> None:
        super().__init__(interval=interval)
        self._pool = pool
        self._on_count = on_count
        self.id = uuid.uuid4().hex
        """This process's row in `replicas` (a new one at each start)."""
        self.live = 1

    @property
    def ttl(self) -> float:
        return 3 * self.interval

    async def run_once(self) -> int:
        async with self._pool.connection() as conn:
            self.live = await replicas.beat(conn, self.id, self.ttl)
        self._on_count(self.live)
        return self.live

    async def stop(self) -> None:
        await super().stop()
        try:
            async with self._pool.connection() as conn:
                await replicas.leave(conn, self.id)
        except Exception as error:
            # Best effort: the others prune it once its beats are older than ttl.
            _log.info("replicas: could not leave the registry", error=str(error))
