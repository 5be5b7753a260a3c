"""Coalesces concurrent single-task creates of one replica into shared inserts.

Each commit costs a WAL flush, and a statement a round trip; a CreateTask that
waited for both alone would cap throughput at one commit per call. The batcher
queues callers and flushes whatever has gathered as soon as the flush slot is free
(group commit): an idle server runs a lone create at once, a busy one folds every
create that arrived during the previous flush into the next statement. One flush is
in flight at a time: with two, the second started as soon as the first create arrived
after the first, and a flush carried ~3 creates at 16 calls in flight; with one it
carries ~6.6, and each statement's fixed cost (pool, round trip, commit, statement
time in the database) is shared by twice as many creates. A flush
is one `insert_batch` statement (tasks, events, queue rows, NOTIFY) in autocommit,
so one round trip and one commit for up to MAX_BATCH callers.

Failure isolation: an item refused by the database's checks gets its own outcome;
if the statement itself fails (it should not: input is validated first) the batch
is split and each item retried alone, so only the bad item sees the error.

Local hand-off: once a flush commits, `on_ready` is told the queues where it made tasks
ready, so this replica's idle workers lease them at once instead of waiting for the
NOTIFY the same statement sent to come back through the LISTEN connection (the lease
is still the one fenced statement; another replica woken by that NOTIFY races it the
way two leasers always do).

A caller that gives up (deadline, cancellation) stops waiting, but its item stays in
the flush and may commit: as with any create, a retry with the same request_id
learns the outcome.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
import structlog
from psycopg import errors as pg_errors
from psycopg_pool import AsyncConnectionPool

from conveyor.server.store.task_inserts import NewTask, Outcome, Result, insert_batch
from conveyor.server.tracing import Tracing

__all__ = ["CreateBatcher"]

log = structlog.get_logger("conveyor.tasks")

MAX_BATCH = 500
MAX_IN_FLIGHT = 1  # see the module's docstring
# A deadlock can only come from two batches racing on the same new request_ids or
# queues in opposite orders; retrying the whole statement settles it.
_RETRYABLE = (pg_errors.DeadlockDetected, pg_errors.SerializationFailure)
_ATTEMPTS = 3
# Errors a single bad item could cause; a lost connection fails the whole batch.
_DATA_ERRORS = (psycopg.DataError, psycopg.IntegrityError)


@dataclass
class _Waiter:
    item: NewTask
    future: asyncio.Future[Result] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class CreateBatcher:
    """Runs single creates through shared multi-row inserts; also runs whole batches.

    `known_queues` remembers (project, queue) pairs whose row exists, so the hot
    path skips the queue upsert for them (queues are never deleted).
    """

    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        *,
        max_batch: int = MAX_BATCH,
        max_in_flight: int = MAX_IN_FLIGHT,
    ) -> None:
        self._pool = pool
        self._max_batch = max_batch
        self._max_in_flight = max_in_flight
        self._pending: list[_Waiter] = []
        self._in_flight = 0
        self._scheduled = False
        self._flushes: set[asyncio.Task[None]] = set()
        self.known_queues: set[tuple[str, str]] = set()
        self.on_ready: Callable[[Iterable[tuple[str, str]]], None] | None = None
        """Told (project, queue) of the ready tasks each committed insert created."""
        self.origin = ""
        """This replica's name in the NOTIFY of its inserts, with on_ready set: the
        notifier skips what comes back (on_ready already woke its workers)."""
        self.tracing: Tracing | None = None
        """With tracing on, each insert is a span in its callers' traces."""

    async def start(self) -> None:
        """Nothing runs between calls; here for the BackgroundLoop lifecycle."""

    async def stop(self) -> None:
        """Waits for flushes under way (their callers are still waiting for them)."""
        while self._flushes or self._pending:
            if self._pending and not self._scheduled:
                self._schedule()
            await asyncio.gather(*self._flushes, return_exceptions=True)
            if self._pending and not self._flushes:
                await asyncio.sleep(0)

    async def create(self, item: NewTask) -> Result:
        """Inserts one task (in a shared statement); its own Result."""
        waiter = _Waiter(item)
        self._pending.append(waiter)
        # While a flush is under way, its end schedules the next one: a drain scheduled
        # now would find the slot taken (it did, for nearly every create at 16 in flight).
        if not self._scheduled and self._in_flight < self._max_in_flight:
            self._schedule()
        return await waiter.future

    async def create_many(self, items: Sequence[NewTask], *, atomic: bool) -> list[Result]:
        """Inserts a caller's batch in one statement of its own; one Result per item."""
        return await self._run(items, atomic=atomic)

    def _schedule(self) -> None:
        # call_soon: creates that arrive in the same event-loop pass join this flush.
        # A fresh context: the flush serves many callers, so it must not carry the first
        # caller's request id and principal into its log lines.
        self._scheduled = True
        asyncio.get_running_loop().call_soon(self._drain, context=contextvars.Context())

    def _drain(self) -> None:
        self._scheduled = False
        while self._pending and self._in_flight < self._max_in_flight:
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            self._in_flight += 1
            task = asyncio.get_running_loop().create_task(self._flush(batch))
            self._flushes.add(task)
            task.add_done_callback(self._flushes.discard)

    async def _flush(self, batch: list[_Waiter]) -> None:
        try:
            try:
                results = await self._run([w.item for w in batch], atomic=False)
            except _DATA_ERRORS as error:
                if len(batch) == 1:
                    _fail(batch, error)
                else:
                    await self._isolate(batch, error)
                return
            except Exception as error:
                _fail(batch, error)
                return
            for waiter, result in zip(batch, results, strict=True):
                if not waiter.future.done():
                    waiter.future.set_result(result)
        finally:
            for waiter in batch:  # only when the flush itself was cancelled
                if not waiter.future.done():
                    waiter.future.cancel()
            self._in_flight -= 1
            if self._pending and not self._scheduled:
                self._schedule()

    async def _isolate(self, batch: list[_Waiter], error: Exception) -> None:
        log.warning("task_batch.split", size=len(batch), error=str(error))
        for waiter in batch:
            try:
                result = (await self._run([waiter.item], atomic=False))[0]
            except Exception as item_error:
                if not waiter.future.done():
                    waiter.future.set_exception(item_error)
            else:
                if not waiter.future.done():
                    waiter.future.set_result(result)

    async def _run(self, items: Sequence[NewTask], *, atomic: bool) -> list[Result]:
        if self.tracing is None:
            return await self._insert(items, atomic=atomic)
        # A flush runs in a context of its own (see _schedule): its span joins the
        # callers' traces through their stored trace context.
        with self.tracing.span_for_many("insert tasks", [i.traceparent for i in items]):
            return await self._insert(items, atomic=atomic)

    async def _insert(self, items: Sequence[NewTask], *, atomic: bool) -> list[Result]:
        upsert = [(i.project, i.queue) not in self.known_queues for i in items]
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                async with self._pool.connection() as conn:
                    results = await insert_batch(
                        conn, items, upsert_queue=upsert, atomic=atomic, origin=self.origin
                    )
            except _RETRYABLE:
                if attempt == _ATTEMPTS:
                    raise
                continue
            break
        if any(upsert):
            for item, result in zip(items, results, strict=True):
                if result.outcome is Outcome.CREATED:
                    self.known_queues.add((item.project, item.queue))
        if self.on_ready is not None:
            self.on_ready(
                {
                    (item.project, item.queue)
                    for item, result in zip(items, results, strict=True)
                    if result.outcome is Outcome.CREATED and item.state == "QUEUED"
                }
            )
        return results


def _fail(batch: list[_Waiter], error: Exception) -> None:
    for waiter in batch:
        if not waiter.future.done():
            waiter.future.set_exception(error)
