"""Task logs: the lines a running attempt writes, appended fenced by its lease and read
back page by page or tailed live.

An append carries the lease_id like every report; one whose lease is not the task's
current one is refused (FAILED_PRECONDITION, LEASE_STALE) and changes nothing. Each
attempt's log is bounded by its queue's max_log_bytes / max_log_lines
(domain/task_log_bounds.py): the oldest lines are dropped, and the first line kept says
how many (dropped_count). Lines belong to their attempt, so they go with their task.

Watching: a watcher reads the lines after its position, then waits for more. An append
on this replica wakes the watchers of its task at once (LogSignals); appends on other
replicas, and the end of the attempt, are seen by a short poll (`poll_interval`), one
indexed read of one task per watcher: tailing a log is rare next to appending to it, so
appends pay nothing (no NOTIFY) for it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence

from prometheus_client import Counter

from conveyor.server.domain import paging
from conveyor.server.domain.leases import TaskRef, stale_lease, task_ref
from conveyor.server.domain.task_log_bounds import DEFAULT_MAX_LOG_BYTES, DEFAULT_MAX_LOG_LINES
from conveyor.server.domain.task_log_lines import MAX_LINE_BYTES, MAX_LINES, LogAppend, parse_append
from conveyor.server.errors import (
    ConveyorError,
    InvalidArgument,
    NotFound,
    Unavailable,
    Violations,
)
from conveyor.server.store import task_logs as log_store
from conveyor.server.store.db import Pool
from conveyor.server.store.task_logs import Appended, LogLineRow
from conveyor.v1 import task_service_pb2

__all__ = [
    "MAX_LINES",
    "MAX_LINE_BYTES",
    "LogAppend",
    "LogSignals",
    "TaskLogs",
    "parse_append",
]

DEFAULT_PAGE_SIZE = 1000
ORDERS = ("", "seq", "seq asc", "seq desc")
_LAST = (2**31 - 1, 2**63 - 1)
"""A position after every line: where a newest-first listing starts."""
WATCH_BATCH = 1000

REFUSED = Counter(
    "conveyor_task_log_items_refused_total",
    "Log batches of the Connect stream dropped: their lease was stale or they were invalid.",
    ["reason"],
)


def _not_found(ref: TaskRef) -> NotFound:
    return NotFound(f"{ref.name} does not exist", metadata={"resource": ref.name})


class LogSignals:
    """Wakes this replica's watchers of a task when a line is appended here."""

    def __init__(self) -> None:
        self._waiters: dict[tuple[str, uuid.UUID], set[asyncio.Event]] = {}

    def subscribe(self, key: tuple[str, uuid.UUID]) -> asyncio.Event:
        event = asyncio.Event()
        self._waiters.setdefault(key, set()).add(event)
        return event

    def unsubscribe(self, key: tuple[str, uuid.UUID], event: asyncio.Event) -> None:
        waiters = self._waiters.get(key)
        if waiters is not None:
            waiters.discard(event)
            if not waiters:
                del self._waiters[key]

    def notify(self, keys: Sequence[tuple[str, uuid.UUID]]) -> None:
        for key in keys:
            for event in self._waiters.get(key, ()):
                event.set()


class TaskLogs:
    def __init__(
        self,
        pool: Pool,
        *,
        stopping: asyncio.Event | None = None,
        poll_interval: float = 0.5,
        default_max_bytes: int = DEFAULT_MAX_LOG_BYTES,
        default_max_lines: int = DEFAULT_MAX_LOG_LINES,
    ) -> None:
        self._pool = pool
        self._stopping = stopping or asyncio.Event()
        self.poll_interval = poll_interval
        self.signals = LogSignals()
        self._defaults = (default_max_bytes, default_max_lines)

    async def _append(self, project: str, items: Sequence[LogAppend]) -> list[Appended | None]:
        async with self._pool.connection() as conn:
            results = await log_store.append(
                conn,
                project,
                [(i.task.id, i.lease_id, i.lines_json) for i in items],
                *self._defaults,
            )
        self.signals.notify([(project, i.task.id) for i in items])
        return results

    async def append(self, item: LogAppend) -> Appended:
        """AppendTaskLogs: FAILED_PRECONDITION for a stale lease, NOT_FOUND for no task."""
        (result,) = await self._append(item.task.project, [item])
        if result is not None:
            return result
        async with self._pool.connection() as conn:
            state = await log_store.task_state(conn, item.task.project, item.task.id)
        if state is None:
            raise _not_found(item.task)
        raise stale_lease(item.task, item.lease_id, state.state)

    async def append_batch(
        self, project: str, requests: Sequence[task_service_pb2.AppendTaskLogsRequest]
    ) -> None:
        """A TaskLogBatch of a Connect stream serving `project`: items are not answered,
        so an invalid item, one of another project, or one with a stale lease is dropped
        alone (and counted)."""
        items = []
        for i, request in enumerate(requests):
            try:
                item = parse_append(request, f"logs.appends[{i}].")
            except ConveyorError:
                REFUSED.labels("invalid").inc()
                continue
            if item.task.project != project:
                REFUSED.labels("project").inc()
                continue
            items.append(item)
        if items:
            # One order of row locks for every batch (by task, each task's items in the
            # order sent), so two batches naming the same attempts cannot deadlock.
            items.sort(key=lambda i: i.task.id)
            results = await self._append(project, items)
            stale = sum(1 for r in results if r is None)
            if stale:
                REFUSED.labels("stale").inc(stale)

    async def list_page(
        self, name: str, attempt: int, page_size: int, page_token: str, order_by: str = ""
    ) -> tuple[list[LogLineRow], str]:
        ref = task_ref(name, "name")
        v = Violations()
        order = " ".join(order_by.lower().split())
        if order not in ORDERS:
            v.add("order_by", "must be `seq` or `seq desc`")
        desc = order == "seq desc"
        if attempt < 0:
            v.add("attempt", "must be 0 (every attempt) or an attempt number")
        if page_size and not 1 <= page_size <= paging.MAX_PAGE_SIZE:
            v.add("page_size", f"must be between 1 and {paging.MAX_PAGE_SIZE}")
        v.raise_if_any()
        after = _LAST if desc else (0, 0)
        if page_token:
            position = paging.decode_token(page_token, ("a", "s", "d"))
            if bool(position["d"]) != desc:
                raise InvalidArgument.of("page_token", "was returned for another order_by")
            after = (int(position["a"]), int(position["s"]))
        limit = page_size or DEFAULT_PAGE_SIZE
        async with self._pool.connection() as conn:
            if await log_store.task_state(conn, ref.project, ref.id) is None:
                raise _not_found(ref)
            rows = await log_store.lines(
                conn,
                ref.project,
                ref.id,
                attempt=attempt,
                after=after,
                limit=limit + 1,
                newest_first=desc,
            )
        token = ""
        if len(rows) > limit:
            rows = rows[:limit]
            token = paging.encode_token({"a": rows[-1].attempt, "s": rows[-1].seq, "d": int(desc)})
        return rows, token

    async def watch(
        self, name: str, attempt: int, after_seq: int
    ) -> AsyncIterator[list[LogLineRow]]:
        """The attempt's lines after after_seq, then live ones, in batches; ends when the
        attempt has ended and every line it wrote was sent."""
        ref = task_ref(name, "name")
        v = Violations()
        if attempt < 0:
            v.add("attempt", "must be 0 (the current attempt) or an attempt number")
        if after_seq < 0:
            v.add("after_seq", "must not be negative")
        v.raise_if_any()
        key = (ref.project, ref.id)
        wake = self.signals.subscribe(key)
        target, after, first = attempt, after_seq, True
        try:
            while True:
                wake.clear()
                async with self._pool.connection() as conn:
                    # The state first, then the lines: an attempt seen ended has written
                    # every line the read below returns.
                    state = await log_store.task_state(conn, ref.project, ref.id, target)
                    if state is None:
                        if first:
                            raise _not_found(ref)
                        return  # deleted while watched
                    first = False
                    if target == 0 and state.attempt > 0:
                        target = state.attempt
                    terminal = state.state in ("SUCCEEDED", "FAILED", "CANCELLED", "INTERRUPTED")
                    # An attempt that never started ends the watch once none can start.
                    ended = state.ended or (not state.started and terminal)
                    rows = (
                        await log_store.lines(
                            conn,
                            ref.project,
                            ref.id,
                            attempt=target,
                            after=(target, after),
                            limit=WATCH_BATCH,
                        )
                        if target > 0
                        else []
                    )
                if rows:
                    yield rows
                    after = rows[-1].seq
                    if len(rows) == WATCH_BATCH:
                        continue
                if ended:
                    return
                if self._stopping.is_set():
                    raise Unavailable(
                        "the server is shutting down; resume with after_seq on another replica",
                        reason="SHUTTING_DOWN",
                        metadata={"after_seq": str(after)},
                    )
                try:
                    async with asyncio.timeout(self.poll_interval):
                        await wake.wait()
                except TimeoutError:
                    pass
        finally:
            self.signals.unsubscribe(key, wake)
