"""The replica's LISTEN connection: turns `conveyor_tasks` notifications into wake-ups.

Writers that make tasks ready NOTIFY `conveyor_tasks` with '<project>/<queue>' in their
transaction; PostgreSQL delivers it to every replica at commit. The notifier wakes the
waiters of that key, so an idle worker leases within milliseconds of the commit.

NOTIFY is a hint, the tasks table is the truth: every `poll_interval` the notifier also
wakes every waiter (a backstop for anything that made tasks ready without a
notification), and while the LISTEN connection is down it wakes them every
`retry_interval` and reconnects, so leasing degrades to polling instead of stopping.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from typing import Any

import psycopg

from conveyor.server.events.waiters import Waiter, Waiters
from conveyor.server.logging import get_logger
from conveyor.server.store import sql

__all__ = ["TASKS_CHANNEL", "Notifier", "queue_key"]

TASKS_CHANNEL = "conveyor_tasks"
_LISTEN = sql.load("lease_listen")
_PING = sql.load("lease_listen_ping")
# Notice a dead peer within ~25 s even when no query is running on the connection.
_KEEPALIVES: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
}

_log = get_logger(__name__)


def queue_key(project: str, queue: str) -> str:
    """The notification payload (and waiter key) of a queue."""
    return f"{project}/{queue}"


class Notifier:
    """A BackgroundLoop holding one LISTEN connection and the replica's waiters."""

    def __init__(
        self,
        database_url: str,
        *,
        poll_interval: float = 2.0,
        retry_interval: float = 0.5,
        ping_timeout: float = 5.0,
    ) -> None:
        self._url = database_url
        self._poll_interval = poll_interval
        self._retry_interval = retry_interval
        self._ping_timeout = ping_timeout
        self.waiters = Waiters()
        self._task: asyncio.Task[None] | None = None
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._listening = asyncio.Event()
        self._first_attempt = asyncio.Event()
        self.notifications = 0
        """Notifications received (for tests and metrics)."""

    @property
    def listening(self) -> bool:
        return self._listening.is_set()

    def subscribe(
        self, project: str, queues: Iterable[str], event: asyncio.Event | None = None
    ) -> Waiter:
        """A waiter woken when tasks of these queues may have become ready."""
        return self.waiters.subscribe((queue_key(project, q) for q in queues), event)

    async def start(self) -> None:
        """Starts listening; returns after the first connection attempt (either way)."""
        self._task = asyncio.create_task(self._run(), name="conveyor-notifier")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10):
                await self._first_attempt.wait()

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        # Anyone still sleeping re-checks (and sees the server is stopping).
        self.waiters.wake_all()

    async def wait_listening(self, within: float = 10.0) -> None:
        """Returns once the LISTEN connection is up (for tests)."""
        async with asyncio.timeout(within):
            await self._listening.wait()

    async def drop_connection(self) -> None:
        """Closes the LISTEN connection as a network failure would (for tests)."""
        if self._conn is not None:
            await self._conn.close()

    async def _run(self) -> None:
        while True:
            try:
                await self._listen()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # any failure means: reconnect
                if self._listening.is_set():
                    _log.warning(
                        "listen connection lost; polling until it is back", error=str(error)
                    )
            finally:
                self._listening.clear()
                self._first_attempt.set()
                conn, self._conn = self._conn, None
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close()
            # Degraded: poll instead of waiting for notifications.
            self.waiters.wake_all()
            await asyncio.sleep(self._retry_interval)

    async def _listen(self) -> None:
        conn = await psycopg.AsyncConnection.connect(
            self._url, autocommit=True, application_name="conveyor-listen", **_KEEPALIVES
        )
        self._conn = conn
        await conn.execute(_LISTEN)
        self._listening.set()
        self._first_attempt.set()
        # Whatever was notified while we were not listening is lost: look once.
        self.waiters.wake_all()
        while True:
            async for notify in conn.notifies(timeout=self._poll_interval):
                self.notifications += 1
                self.waiters.wake(notify.payload)
            self.waiters.wake_all()
            async with asyncio.timeout(self._ping_timeout):
                await conn.execute(_PING)
