"""A pass that repeats: the lifecycle shared by the maintenance loops.

Subclasses implement `run_once()` (one pass, safe to run on N replicas at once) and may
override `delay()` to choose when the next pass runs. A failing pass is logged and
retried on the next tick; it never stops the loop. A pass that finds the database
unreachable is retried with backoff (store.outage.reconnecting, starting at the
loop's interval and growing to RECONNECT_MAX) until it goes through: one warning when
the outage starts and one line when it ends, instead of a traceback every tick.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from conveyor.server.logging import get_logger
from conveyor.server.store import outage

__all__ = ["PeriodicLoop"]

_log = get_logger(__name__)


class PeriodicLoop:
    name = "loop"

    def __init__(self, *, interval: float) -> None:
        self.interval = interval
        self._task: asyncio.Task[None] | None = None
        self._passes = 0
        self._in_pass = False
        self._pass_done = asyncio.Condition()
        self._poke = asyncio.Event()

    async def run_once(self) -> Any:
        raise NotImplementedError

    async def delay(self) -> float:
        """Seconds until the next pass (default: the interval)."""
        return self.interval

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"conveyor-{self.name}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def poke(self) -> None:
        """Runs the next pass now instead of at its time."""
        self._poke.set()

    async def wait_for_pass(self, within: float = 10.0) -> None:
        """Returns after a complete pass that started after this call (for tests)."""
        async with self._pass_done:
            target = self._passes + (2 if self._in_pass else 1)
            self.poke()
            async with asyncio.timeout(within):
                await self._pass_done.wait_for(lambda: self._passes >= target)

    async def _pass(self) -> None:
        # The first attempt is a plain call: only an outage pays for the retrying.
        try:
            await self.run_once()
            return
        except Exception as error:
            if not outage.is_connection_loss(error):
                raise
            _log.warning(f"{self.name}: database unreachable; retrying", error=str(error))
        initial = max(min(self.interval, 1.0), 0.05)
        await outage.reconnecting(self.name, initial=initial)(self.run_once)
        _log.info(f"{self.name}: database reachable again")

    async def _run(self) -> None:
        while True:
            self._poke.clear()
            self._in_pass = True
            try:
                await self._pass()
            except asyncio.CancelledError:
                raise
            except Exception:
                _log.exception(f"{self.name} pass failed")
            finally:
                self._in_pass = False
            async with self._pass_done:
                self._passes += 1
                self._pass_done.notify_all()
            try:
                wait = await self.delay()
            except asyncio.CancelledError:
                raise
            except Exception:
                wait = self.interval
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(wait, 0.0)):
                    await self._poke.wait()
