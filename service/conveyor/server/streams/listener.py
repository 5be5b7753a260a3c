"""The replica's one LISTEN connection: `conveyor_tasks`, `conveyor_events`, `conveyor_webhooks`.

Writers that make tasks ready NOTIFY `conveyor_tasks` with '<project>/<queue>'; the
events_notify trigger NOTIFYs the project of every appended event at commit; the webhook
outbox trigger NOTIFYs `conveyor_webhooks` when it queues a delivery. The listener hands
each notification to the subscribers of its channel (the lease notifier, the event hub,
the webhook loop).
NOTIFY is a hint and the events table is the truth: every `poll_interval` the listener
calls its subscribers with None ("look at everything"), and while the connection is down
it does so every `retry_interval` and reconnects with backoff (tenacity, from
retry_interval doubling to store.outage.RECONNECT_MAX), so streams degrade to polling.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import psycopg

from conveyor.server.logging import get_logger
from conveyor.server.store import listen as listen_store
from conveyor.server.store import outage

__all__ = ["EVENTS_CHANNEL", "TASKS_CHANNEL", "WEBHOOKS_CHANNEL", "EventListener"]

TASKS_CHANNEL = "conveyor_tasks"
EVENTS_CHANNEL = "conveyor_events"
WEBHOOKS_CHANNEL = "conveyor_webhooks"
# Notice a dead peer within ~25 s even when no query is running on the connection.
_KEEPALIVES: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
}

_log = get_logger(__name__)

Subscriber = Callable[[str | None], None]
"""Called with the notification payload, or None for "maybe anything changed"."""


class EventListener:
    """A BackgroundLoop holding one LISTEN connection."""

    def __init__(
        self,
        database_url: str,
        *,
        poll_interval: float = 1.0,
        retry_interval: float = 0.5,
        ping_timeout: float = 5.0,
        prepare: bool = True,
    ) -> None:
        self._url = database_url
        # Off behind a pooler that cannot track prepared statements: the ping repeats
        # and would otherwise be prepared on a server connection others then get.
        self._connect_options: dict[str, Any] = {} if prepare else {"prepare_threshold": None}
        self.poll_interval = poll_interval
        self._retry_interval = retry_interval
        self._ping_timeout = ping_timeout
        self._subscribers: dict[str, list[Subscriber]] = {
            TASKS_CHANNEL: [],
            EVENTS_CHANNEL: [],
            WEBHOOKS_CHANNEL: [],
        }
        self._task: asyncio.Task[None] | None = None
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._listening = asyncio.Event()
        self._first_attempt = asyncio.Event()
        self.notifications = 0
        """Notifications received (for tests and metrics)."""

    def subscribe(self, subscriber: Subscriber, channel: str = EVENTS_CHANNEL) -> None:
        self._subscribers[channel].append(subscriber)

    def unsubscribe(self, subscriber: Subscriber, channel: str = EVENTS_CHANNEL) -> None:
        self._subscribers[channel].remove(subscriber)

    @property
    def listening(self) -> bool:
        return self._listening.is_set()

    async def start(self) -> None:
        """Starts listening; returns after the first connection attempt (either way)."""
        self._task = asyncio.create_task(self._run(), name="conveyor-event-listener")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10):
                await self._first_attempt.wait()

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def wait_listening(self, within: float = 10.0) -> None:
        async with asyncio.timeout(within):
            await self._listening.wait()

    async def drop_connection(self) -> None:
        """Closes the LISTEN connection as a network failure would (for tests)."""
        if self._conn is not None:
            await self._conn.close()

    def _tell(self, project: str | None, channel: str | None = None) -> None:
        """Calls the subscribers of `channel` (None: of every channel)."""
        for name, subscribers in self._subscribers.items():
            if channel is not None and name != channel:
                continue
            for subscriber in subscribers:
                try:
                    subscriber(project)
                except Exception:
                    _log.exception("event subscriber failed")

    async def _run(self) -> None:
        while True:
            # A fresh backoff per outage: the first reconnect waits retry_interval again.
            retrying = outage.reconnecting(
                "event-listener",
                initial=self._retry_interval,
                retry=lambda error: isinstance(error, Exception),
                wait=self._poll_while_waiting,
            )
            async for attempt in retrying:
                with attempt:
                    await self._session()
            # A session was lost: a moment before the first reconnect, so a connection
            # that fails right after LISTEN cannot spin.
            await self._poll_while_waiting(self._retry_interval)

    async def _session(self) -> None:
        """One LISTEN session. Raises when it could not start (tenacity backs off);
        returns when a session that had started is lost (a new backoff begins)."""
        lost = False
        try:
            await self._listen()
        except Exception as error:
            lost = self._listening.is_set()
            if lost:
                _log.warning("event listen connection lost; polling", error=str(error))
            else:
                raise
        finally:
            # Also on cancellation (stop()): the connection is closed, never leaked.
            self._listening.clear()
            self._first_attempt.set()
            conn, self._conn = self._conn, None
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()
        self._tell(None)

    async def _poll_while_waiting(self, seconds: float) -> None:
        """The backoff's wait: streams degrade to polling, so subscribers still hear
        "look at everything" every retry_interval while the connection is down."""
        ticker = asyncio.create_task(self._tick())
        try:
            await outage.sleep(seconds, who="event-listener")
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self._retry_interval)
            self._tell(None)

    async def _listen(self) -> None:
        conn = await psycopg.AsyncConnection.connect(
            self._url,
            autocommit=True,
            application_name="conveyor-listen",
            **_KEEPALIVES,
            **self._connect_options,
        )
        self._conn = conn
        await listen_store.listen(conn)
        self._listening.set()
        self._first_attempt.set()
        # Whatever was notified while we were not listening is lost: look once.
        self._tell(None)
        while True:
            async for notify in conn.notifies(timeout=self.poll_interval):
                self.notifications += 1
                self._tell(notify.payload or None, notify.channel)
            self._tell(None)
            async with asyncio.timeout(self._ping_timeout):
                await listen_store.ping(conn)
