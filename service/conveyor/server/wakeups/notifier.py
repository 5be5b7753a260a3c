"""Turns `conveyor_tasks` notifications into wake-ups of idle workers.

Writers that make tasks ready NOTIFY `conveyor_tasks` with '<project>/<queue>' in their
transaction; the replica's one LISTEN connection (streams.listener.EventListener) hands
them here, and the notifier wakes the waiters of that key, so an idle worker leases
within milliseconds of the commit.

A replica that made tasks ready itself (store/task_batcher.py) wakes its own waiters at
once through `ready`, without waiting for its NOTIFY to come back. That NOTIFY carries
the replica's `origin` ('<project>/<queue>/<origin>'), so when it does come back it is
skipped here (every other replica wakes as usual): an idle worker then runs one lease
statement per create rather than two.

NOTIFY is a hint, the tasks table is the truth: the listener also calls with None every
poll interval and while its connection is down, and the notifier then wakes every waiter,
so leasing degrades to polling instead of stopping.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable

from conveyor.server.streams.listener import TASKS_CHANNEL, EventListener
from conveyor.server.wakeups.waiters import Waiter, Waiters

__all__ = ["TASKS_CHANNEL", "Notifier", "queue_key"]


def queue_key(project: str, queue: str) -> str:
    """The notification payload (and waiter key) of a queue."""
    return f"{project}/{queue}"


class Notifier:
    """The replica's lease waiters, fed by the shared LISTEN connection.

    A BackgroundLoop only so that stopping the server wakes every sleeper; the
    connection itself belongs to the listener.
    """

    def __init__(self, listener: EventListener) -> None:
        self._listener = listener
        self.waiters = Waiters()
        self.origin = uuid.uuid4().hex[:12]
        """This replica's name in the NOTIFY of the creates it hands off itself."""
        self.own = 0
        """Notifications of this replica's own creates that were skipped (for tests)."""
        listener.subscribe(self._notified, TASKS_CHANNEL)

    def _notified(self, payload: str | None) -> None:
        if payload is None:
            self.waiters.wake_all()
            return
        key, slash, origin = payload.rpartition("/")
        # Keys are '<project>/<queue>' or '<project>/@<worker>' (neither part holds a
        # '/'): a third part names the replica whose create it was.
        if slash and "/" in key:
            if origin == self.origin:
                self.own += 1
                return
            payload = key
        self.waiters.wake(payload)

    def ready(self, queues: Iterable[tuple[str, str]]) -> None:
        """Wakes the waiters of (project, queue) pairs this replica just made tasks ready in."""
        for project, queue in queues:
            self.waiters.wake(queue_key(project, queue))

    def deafen(self) -> None:
        """Stops hearing NOTIFY and the listener's polls (for tests of the local wake)."""
        self._listener.unsubscribe(self._notified, TASKS_CHANNEL)

    @property
    def listening(self) -> bool:
        return self._listener.listening

    @property
    def notifications(self) -> int:
        return self._listener.notifications

    def subscribe(
        self, project: str, queues: Iterable[str], event: asyncio.Event | None = None
    ) -> Waiter:
        """A waiter woken when tasks of these queues may have become ready."""
        return self.waiters.subscribe((queue_key(project, q) for q in queues), event)

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        # Anyone still sleeping re-checks (and sees the server is stopping).
        self.waiters.wake_all()

    async def wait_listening(self, within: float = 10.0) -> None:
        """Returns once the LISTEN connection is up (for tests)."""
        await self._listener.wait_listening(within)

    async def drop_connection(self) -> None:
        """Closes the LISTEN connection as a network failure would (for tests)."""
        await self._listener.drop_connection()
