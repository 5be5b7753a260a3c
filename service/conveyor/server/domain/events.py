"""EventService rules: publishing custom events, paging through the log, watching it.

Event ids are cursors in commit order (store/event_rows.py): ListEvents and WatchEvents
only ever hand out events below the bound that no running transaction can still write
under, so a client that pages with ListEvents and then watches from the last id it saw
misses nothing, whichever replicas answer.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

from conveyor.client._json import from_struct
from conveyor.server.domain import names, paging, request_ids
from conveyor.server.domain.events_filter import EventMatcher, parse_event_filter
from conveyor.server.errors import InvalidArgument, NotFound, Violations
from conveyor.server.store import event_rows as event_store
from conveyor.server.store.db import Pool
from conveyor.server.store.event_rows import EventRow
from conveyor.v1 import event_pb2

__all__ = [
    "KEEPALIVE_TYPE",
    "MAX_DATA_BYTES",
    "RESERVED_PREFIXES",
    "EventPage",
    "Events",
    "LiveEvents",
    "Position",
]

KEEPALIVE_TYPE = "conveyor.keepalive"
"""The type of the keep-alive a watch sends when idle; its id is the stream's cursor."""
RESERVED_PREFIXES = ("task.", "queue.", "schedule.", "command.", "worker.", "webhook.", "conveyor.")
"""Types only the system appends: the contract's five, plus webhook delivery outcomes
and conveyor.keepalive, so no one can forge either."""
MAX_DATA_BYTES = 64 * 1024
MAX_TYPE = 200
MAX_SUBJECT = 1000
TYPE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]*")
TYPE_RULE = "must start with a letter or digit and use only letters, digits and . _ : / -"
# ListEvents looks at no more than this many rows per call, so a filter that matches
# rarely returns a short page (with a token to go on) instead of scanning the whole log.
_SCAN_LIMIT = 20_000
_TOKEN_FIELDS = ("p", "fp")


@dataclass(frozen=True, slots=True)
class Position:
    """A cursor a stream reports while it has nothing to send (a keep-alive)."""

    id: int


class LiveEvents(Protocol):
    """The replica's tail of the event log (streams.hub.EventHub), as watches use it.

    Declared here so the rules need not import the streams layer above them.
    """

    def watch(
        self, project: str, matcher: EventMatcher, after: int
    ) -> AsyncIterator[list[EventRow] | Position]: ...


@dataclass(frozen=True)
class EventPage:
    rows: list[EventRow]
    next_page_token: str


def _project(parent: str) -> str:
    return names.parse(parent, "parent").project


def _after(v: Violations, after: int) -> int:
    if after < 0:
        v.add("after", "must be an event id (>= 0)")
        return 0
    return after


def _fingerprint(project: str, event_filter: event_pb2.EventFilter, after: int) -> str:
    digest = hashlib.sha256(f"{project}\0{after}\0".encode())
    digest.update(event_filter.SerializeToString(deterministic=True))
    return digest.hexdigest()[:16]


def check_published(v: Violations, event: event_pb2.Event) -> dict[str, Any]:
    """Validates a PublishEvent event; returns its data as JSON."""
    if not event.type:
        v.add("event.type", "is required")
    elif len(event.type) > MAX_TYPE:
        v.add("event.type", f"must be at most {MAX_TYPE} characters")
    elif not TYPE_RE.fullmatch(event.type):
        v.add("event.type", TYPE_RULE)
    elif event.type.startswith(RESERVED_PREFIXES):
        v.add(
            "event.type",
            f"{event.type!r} is reserved; types starting with "
            f"{', '.join(RESERVED_PREFIXES)} are appended by the system",
        )
    if len(event.subject) > MAX_SUBJECT:
        v.add("event.subject", f"must be at most {MAX_SUBJECT} characters")
    elif any(ord(c) < 0x20 for c in event.subject):
        v.add("event.subject", "must not contain control characters")
    if event.data.ByteSize() > MAX_DATA_BYTES:
        v.add("event.data", f"must be at most {MAX_DATA_BYTES} bytes (64 KiB)")
        return {}
    return from_struct(event.data)


class Events:
    def __init__(self, pool: Pool, hub: LiveEvents) -> None:
        self._pool = pool
        self._hub = hub

    async def publish(
        self,
        parent: str,
        event: event_pb2.Event | None,
        request_id: str = "",
        request_hash: str = "",
    ) -> EventRow:
        project = _project(parent)
        v = Violations()
        if event is None:
            v.add("event", "is required")
            v.raise_if_any()
            raise AssertionError("unreachable")
        data = check_published(v, event)
        request_ids.check(v, request_id)
        v.raise_if_any()
        async with self._pool.connection() as conn, conn.transaction():
            earlier = await request_ids.claim(
                conn, project, "PublishEvent", request_id, request_hash
            )
            if earlier is not None:
                found = await event_store.get(conn, project, int(earlier))
                if found is None:
                    raise NotFound(f"event {earlier} no longer exists (pruned)")
                return found
            row = await event_store.publish(
                conn, project=project, type=event.type, subject=event.subject, data=data
            )
            await request_ids.made(conn, project, "PublishEvent", request_id, str(row.id))
            return row

    async def list_page(
        self,
        parent: str,
        event_filter: event_pb2.EventFilter,
        page_size: int,
        page_token: str,
        after: int,
        *,
        me: str = "",
    ) -> EventPage:
        project = _project(parent)
        v = Violations()
        size = paging.page_size(page_size)
        after = _after(v, after)
        matcher = parse_event_filter(v, event_filter, project, me=me)
        v.raise_if_any()
        fingerprint = _fingerprint(project, event_filter, after)
        position = after
        if page_token:
            token = paging.decode_token(page_token, _TOKEN_FIELDS)
            if token["fp"] != fingerprint or not isinstance(token["p"], int):
                raise InvalidArgument.of(
                    "page_token", "was made for another parent, filter or after"
                )
            position = max(after, token["p"])
        rows, position, more = await self._scan(project, matcher, position, size)
        next_token = paging.encode_token({"p": position, "fp": fingerprint}) if more else ""
        return EventPage(rows, next_token)

    async def _scan(
        self, project: str, matcher: EventMatcher, position: int, size: int
    ) -> tuple[list[EventRow], int, bool]:
        """Up to `size` matching events after `position`; the position reached; whether
        there may be more final events after it."""
        matched: list[EventRow] = []
        scanned = 0
        chunk = min(1000, max(size, 100))
        async with self._pool.connection() as conn:
            while True:
                page = await event_store.fetch_after(conn, project, position, chunk)
                for row in page.rows:
                    position = row.id
                    scanned += 1
                    if matcher(row):
                        matched.append(row)
                        if len(matched) == size:
                            return matched, position, True
                if len(page.rows) < chunk:
                    # Read up to the bound: that is the end of the final log, for now.
                    return matched, position, False
                if scanned >= _SCAN_LIMIT:
                    return matched, position, True

    def watch(
        self, parent: str, event_filter: event_pb2.EventFilter, after: int, *, me: str = ""
    ) -> AsyncIterator[list[EventRow] | Position]:
        """Validates a watch and returns its stream (see streams.hub.EventHub.watch)."""
        project = _project(parent)
        v = Violations()
        after = _after(v, after)
        matcher = parse_event_filter(v, event_filter, project, me=me)
        v.raise_if_any()
        return self._hub.watch(project, matcher, after)
