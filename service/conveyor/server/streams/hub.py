"""The event hub: per-project tails that read each final event once and fan it out.

A watch replays from its cursor with its own reads until it reaches the tail's position,
then attaches to the tail without yielding control in between, so no event falls
between the replay and the live part, and a subscription skips what it already has, so
none comes twice. Positions are cursors every replica agrees on (see store/event_rows.py):
a client may resume on any replica from the last id it received.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from prometheus_client import Counter, Gauge

from conveyor.server.domain.events import Position
from conveyor.server.domain.events_filter import EventMatcher
from conveyor.server.logging import get_logger
from conveyor.server.store import event_rows as event_store
from conveyor.server.store.db import Pool
from conveyor.server.store.event_rows import EventRow
from conveyor.server.streams.subscription import Closed, Overflowed, Subscription

__all__ = ["Closed", "EventHub", "Overflowed"]

_log = get_logger(__name__)

SUBSCRIBERS = Gauge("conveyor_event_subscribers", "Live WatchEvents subscribers on this replica.")
OVERFLOWS = Counter(
    "conveyor_event_subscriber_overflows_total",
    "WatchEvents streams cut off because their subscriber fell behind its buffer.",
)


@dataclass(eq=False)
class _Group:
    """Subscribers sharing one filter: it runs once per event for all of them."""

    matcher: EventMatcher
    subscriptions: set[Subscription] = field(default_factory=set)


class _Tail:
    """Reads one project's final events in cursor order and hands them to subscribers."""

    def __init__(self, hub: EventHub, project: str) -> None:
        self.hub = hub
        self.project = project
        self.position = 0
        """Every event up to here has been handed to the subscribers that want it."""
        self.ready = asyncio.Event()
        self.wake = asyncio.Event()
        self.groups: dict[str, _Group] = {}
        # Groups whose filter names exact types (the common case) are found by the
        # event's type; only the rest are asked about every event. So hundreds of idle
        # subscribers with different filters cost a dict lookup per event, not hundreds
        # of filter runs.
        self.by_type: dict[str, set[_Group]] = {}
        self.scanned: set[_Group] = set()
        # Groups without a filter take every event, with no question asked per event.
        self.unfiltered: set[_Group] = set()
        self.refs = 0
        self.task: asyncio.Task[None] | None = None
        self.delivered = True
        """Whether the last read handed events to a subscriber (see pause)."""
        self.read_end = 0.0
        """When the last read ended (the event loop's clock)."""

    def attach(self, matcher: EventMatcher, subscription: Subscription) -> None:
        group = self.groups.get(matcher.key)
        if group is None:
            group = self.groups[matcher.key] = _Group(matcher)
            if _takes_everything(matcher):
                self.unfiltered.add(group)
            elif matcher.exact_types and not matcher.type_patterns:
                for event_type in matcher.exact_types:
                    self.by_type.setdefault(event_type, set()).add(group)
            else:
                self.scanned.add(group)
        group.subscriptions.add(subscription)
        SUBSCRIBERS.inc()

    def detach(self, matcher: EventMatcher, subscription: Subscription) -> None:
        group = self.groups.get(matcher.key)
        if group is not None and subscription in group.subscriptions:
            group.subscriptions.discard(subscription)
            SUBSCRIBERS.dec()
            if not group.subscriptions:
                del self.groups[matcher.key]
                self.scanned.discard(group)
                self.unfiltered.discard(group)
                for event_type in matcher.exact_types:
                    indexed = self.by_type.get(event_type)
                    if indexed is not None:
                        indexed.discard(group)
                        if not indexed:
                            del self.by_type[event_type]

    async def run(self) -> None:
        hub = self.hub
        while not self.ready.is_set():
            try:
                self.position = await event_store.live_position(hub.pool)
                self.ready.set()
            except Exception:
                _log.exception("event tail could not start", project=self.project)
                await asyncio.sleep(hub.poll_interval)
        loop = asyncio.get_running_loop()
        delay = hub.poll_interval
        held_delay = hub.held_retry
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self.wake.wait()
            await asyncio.sleep(self.pause(loop.time()))
            self.wake.clear()
            try:
                held = await self._read()
            except Exception:
                _log.exception("event tail read failed", project=self.project)
                held, self.delivered = False, True
            self.read_end = loop.time()
            # Events held back by an older writer become readable when it ends, which
            # no notification announces (it may have written nothing here): look again
            # soon, backing off towards the poll interval.
            if held:
                delay, held_delay = held_delay, min(held_delay * 2, hub.poll_interval)
            else:
                delay, held_delay = hub.poll_interval, hub.held_retry

    def pause(self, now: float) -> float:
        """Seconds to wait, once notified, before reading.

        Commits notify one by one; a moment's pause (read_delay) lets a burst of them
        share one read instead of costing one read each. While the project is busy with
        events that none of the subscribers here wanted in the last read, reads are
        spaced idle_read_interval apart: each read costs a pooled connection and a
        database round trip that the writers pay for on a busy machine, and no one is
        waiting on those events. A read that hands anything over restores the short
        pause, so a subscriber that gets events sees them within read_delay.
        """
        if self.delivered:
            return self.hub.read_delay
        return max(self.hub.read_delay, self.read_end + self.hub.idle_read_interval - now)

    async def _read(self) -> bool:
        """Reads up to the bound; returns whether committed events are held back by an
        older writer."""
        hub = self.hub
        # Never more at once than a buffer holds: a subscriber that keeps up must not be
        # cut off by the size of a read.
        limit = max(1, min(hub.batch, hub.buffer_size))
        self.delivered = False
        while True:
            async with hub.pool.connection() as conn:
                page = await event_store.fetch_after(conn, self.project, self.position, limit)
            self._dispatch(page.rows, page.position)
            if len(page.rows) < limit:
                return page.held

    def _dispatch(self, rows: list[EventRow], position: int) -> None:
        matched: dict[_Group, list[EventRow]] = dict.fromkeys(self.unfiltered, rows) if rows else {}
        for row in rows:
            for group in self.by_type.get(row.type, ()):
                if group.matcher(row):
                    matched.setdefault(group, []).append(row)
            for group in self.scanned:
                if group.matcher(row):
                    matched.setdefault(group, []).append(row)
        # Subscribers without events this time are not touched: their position is the
        # tail's (see EventHub.watch).
        for group, group_rows in matched.items():
            for subscription in list(group.subscriptions):
                if not subscription.offer(group_rows):
                    self.detach(group.matcher, subscription)
                    OVERFLOWS.inc()
        self.position = max(self.position, position)
        if matched:
            self.delivered = True


def _takes_everything(matcher: EventMatcher) -> bool:
    return not (matcher.exact_types or matcher.type_patterns or matcher.subjects or matcher.task)


def _discard(task: asyncio.Task[event_store.Page]) -> None:
    """Retrieves the outcome of a read nobody waits for any more (no warning logged)."""
    if not task.cancelled():
        task.exception()


class EventHub:
    """A BackgroundLoop: the tails of the projects someone watches on this replica."""

    def __init__(
        self,
        pool: Pool,
        *,
        shutting_down: asyncio.Event | None = None,
        buffer_size: int = 10_000,
        keepalive_interval: float = 15.0,
        batch: int = 1000,
        chunk: int = 64,
        poll_interval: float = 1.0,
        held_retry: float = 0.005,
        read_delay: float = 0.002,
        idle_read_interval: float = 0.025,
    ) -> None:
        self.pool = pool
        self.buffer_size = buffer_size
        """Events a subscriber may fall behind before it is cut off."""
        self.keepalive_interval = keepalive_interval
        """Seconds of silence after which a stream sends a keep-alive."""
        self.batch = batch
        """Events per read of the log (replays and tails)."""
        self.chunk = chunk
        """Events a stream takes at once: rendered together, then sent one by one."""
        self.poll_interval = poll_interval
        self.held_retry = held_retry
        self.read_delay = read_delay
        """Seconds a tail waits after a notification, so that a burst shares one read."""
        self.idle_read_interval = idle_read_interval
        """Seconds from the end of a tail's read to the start of the next while its reads
        hand nothing to anyone (see _Tail.pause): how long an event that a subscriber
        wants may wait, beyond one read, amid a flood of events no one here wants."""
        self._shutting_down = shutting_down or asyncio.Event()
        self._tails: dict[str, _Tail] = {}
        self._closing = False
        self._watcher: asyncio.Task[None] | None = None
        self._subscriptions: set[Subscription] = set()

    async def start(self) -> None:
        self._watcher = asyncio.create_task(self._close_on_shutdown(), name="conveyor-event-hub")

    async def stop(self) -> None:
        self._close_all()
        tasks = [t.task for t in self._tails.values() if t.task is not None]
        if self._watcher is not None:
            tasks.append(self._watcher)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tails.clear()

    def notify(self, project: str | None) -> None:
        """A project has new events (None: any may have)."""
        if project is None:
            for tail in self._tails.values():
                tail.wake.set()
        else:
            found = self._tails.get(project)
            if found is not None:
                found.wake.set()

    def position(self, project: str) -> int | None:
        """The tail's position, when this replica tails the project (for tests)."""
        tail = self._tails.get(project)
        return tail.position if tail is not None and tail.ready.is_set() else None

    def subscribers(self, project: str) -> int:
        """Live subscriptions attached to the project's tail (for tests and metrics)."""
        tail = self._tails.get(project)
        if tail is None:
            return 0
        return sum(len(group.subscriptions) for group in tail.groups.values())

    async def watch(
        self, project: str, matcher: EventMatcher, after: int
    ) -> AsyncIterator[list[EventRow] | Position]:
        """Events after `after` (0: from now) matching `matcher`, then live ones, forever,
        in batches of at most `chunk` (never empty), oldest first.

        Starts with a Position (the cursor the stream starts from) and sends one after
        `keepalive_interval` seconds without events. The consumer sends a whole batch
        before it asks for more, so a Position covers every event yielded before it.
        Raises Overflowed when the consumer fell behind, Closed when the replica shuts
        down.
        """
        tail = self._acquire(project)
        ahead: asyncio.Task[event_store.Page] | None = None
        everything = _takes_everything(matcher)
        try:
            await self._wait_ready(tail)
            position = after if after > 0 else tail.position
            yield Position(position)
            while position < tail.position:
                if ahead is not None:
                    page, ahead = await ahead, None
                else:
                    page = await self._fetch(project, position)
                reached = max(position, page.position)
                # A full page says more is there: read the next one while this one is
                # sent (the tail's position only grows, so the loop will take it). A
                # replay holds at most two pages.
                if len(page.rows) >= self.batch and reached < tail.position:
                    ahead = asyncio.create_task(self._fetch(project, reached))
                chunk = self.chunk
                matched = page.rows if everything else [r for r in page.rows if matcher(r)]
                for start in range(0, len(matched), chunk):
                    if self._closing:
                        raise Closed
                    yield matched[start : start + chunk]
                if self._closing:
                    raise Closed
                if page.position <= position:
                    await asyncio.sleep(self.held_retry)
                position = reached
            # Caught up: attach in the same step as the check above (no await in
            # between), so the tail's next read starts where this replay stopped.
            subscription = Subscription(position, self.buffer_size)
            tail.attach(matcher, subscription)
            self._subscriptions.add(subscription)
            try:
                while True:
                    live = await subscription.take(self.keepalive_interval, self.chunk)
                    if live:
                        yield live
                    else:
                        # An empty buffer holds everything the tail dispatched up to its
                        # position that this filter wants: all of it has been sent.
                        yield Position(max(subscription.position, tail.position))
            finally:
                self._subscriptions.discard(subscription)
                tail.detach(matcher, subscription)
        finally:
            if ahead is not None:
                # Not awaited: the read gives its connection back as it is cancelled.
                ahead.cancel()
                ahead.add_done_callback(_discard)
            self._release(tail)

    async def _fetch(self, project: str, position: int) -> event_store.Page:
        async with self.pool.connection() as conn:
            return await event_store.fetch_after(conn, project, position, self.batch)

    async def _wait_ready(self, tail: _Tail) -> None:
        while not tail.ready.is_set():
            if self._closing:
                raise Closed
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.5):
                    await tail.ready.wait()

    def _acquire(self, project: str) -> _Tail:
        if self._closing:
            raise Closed
        tail = self._tails.get(project)
        if tail is None:
            tail = self._tails[project] = _Tail(self, project)
            tail.task = asyncio.create_task(tail.run(), name=f"conveyor-event-tail-{project}")
        tail.refs += 1
        return tail

    def _release(self, tail: _Tail) -> None:
        tail.refs -= 1
        if tail.refs == 0 and self._tails.get(tail.project) is tail:
            del self._tails[tail.project]
            if tail.task is not None:
                tail.task.cancel()

    def _close_all(self) -> None:
        self._closing = True
        for subscription in list(self._subscriptions):
            subscription.close()

    async def _close_on_shutdown(self) -> None:
        await self._shutting_down.wait()
        self._close_all()
