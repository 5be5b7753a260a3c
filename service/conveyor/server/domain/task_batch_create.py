"""BatchCreateTasks: validate every item, insert the plain ones in bulk, the others alone.

A batch that is not atomic is validated and inserted in chunks of CHUNK items: each
chunk's insert (its own statement and commit, on its own pooled connection) is sent
before the next chunk is validated, so the database works on one chunk while this
process validates the next, and on two cores the chunks' statements run side by side.
One statement for the whole batch made the call wait for the server's validation, then
the database, then the answer, one after another (bench/README.md, "Under load ...
the enqueue path"). Each item's outcome is its own whether or not it shares a
statement, so splitting changes nothing a caller sees, with one exception kept out:
items that repeat a request_id. Within one statement the first in the batch wins;
across concurrent statements it would be whichever commits first, so a batch that
repeats a request_id is inserted in one statement, as before. If a statement fails
(the database is lost), the call fails and chunks already committed stay: the items of
a batch that is not atomic are each a create of its own, and a retry with request_ids
learns which were made, as after a lost answer.

An atomic batch is validated whole first (any refusal refuses the call) and inserted
in one statement, or one transaction when it holds dedupe or dependency items.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from conveyor.client._limits import MAX_BATCH_BYTES
from conveyor.server.domain import names, task_batches, task_dependencies, task_shapes
from conveyor.server.domain.task_dedupe import Created
from conveyor.server.domain.task_ids import TaskIds
from conveyor.server.errors import ConveyorError, Internal, InvalidArgument, NotFound
from conveyor.server.store.task_batcher import CreateBatcher
from conveyor.server.store.task_inserts import NewTask, Result, insert_batch
from conveyor.v1 import task_service_pb2

__all__ = ["CHUNK", "MAX_BATCH", "batch_create"]

MAX_BATCH = 1000
CHUNK = 250
"""Items per statement of a batch that is not atomic (1000 items: four statements)."""

Pair = tuple[int, NewTask]  # the item's position in the request, and what to insert
Results = list[Created | ConveyorError | None]


def chunks(requests: Sequence[task_service_pb2.CreateTaskRequest]) -> list[range]:
    """The positions of each statement's items: runs of CHUNK, or one run for a batch
    that repeats a request_id (see the module's docstring)."""
    count = len(requests)
    if count <= CHUNK:
        return [range(count)]
    given = [r.request_id for r in requests if r.request_id]
    if len(set(given)) != len(given):
        return [range(count)]
    return [range(start, min(start + CHUNK, count)) for start in range(0, count, CHUNK)]


class _Validator:
    """Turns a batch's items into NewTasks; refusals go into `results`."""

    def __init__(
        self,
        parent: str,
        requests: Sequence[task_service_pb2.CreateTaskRequest],
        ids: TaskIds,
        creator: str,
        traceparent: str | None,
        results: Results,
    ) -> None:
        self.parent = parent
        self.project = names.parse(parent, "parent").project
        self.requests = requests
        self.traceparent = traceparent
        self.results = results
        self.shapes = task_shapes.Shapes(self.project, ids, creator=creator)

    def items(self, positions: range) -> list[Pair]:
        parent, results, traceparent = self.parent, self.results, self.traceparent
        new_task = self.shapes.new_task
        pairs: list[Pair] = []
        for i in positions:
            request = self.requests[i]
            task = request.task  # read once: each read of a message field makes a wrapper
            request_id = request.request_id
            try:
                if request.parent and request.parent != parent:
                    raise InvalidArgument.of(f"requests[{i}].parent", f"must be empty or {parent}")
                new = new_task(
                    task,
                    request_id=request_id,
                    request_hash=(
                        task_batches.request_hash(parent, task, request_id) if request_id else None
                    ),
                    at=i,
                )
            except ConveyorError as error:
                results[i] = error
            else:
                if traceparent:
                    # Set on the item's own NewTask: dataclasses.replace costs ~9 us a task.
                    new.traceparent = traceparent
                pairs.append((i, new))
        return pairs


def _one_at_a_time(new: NewTask) -> bool:
    """Items with a dedupe_policy or depends_on are created one at a time."""
    return new.dedupe is not None or bool(new.depends_on)


async def batch_create(
    pool: AsyncConnectionPool[Any],
    batcher: CreateBatcher,
    ids: TaskIds,
    parent: str,
    requests: Sequence[task_service_pb2.CreateTaskRequest],
    *,
    atomic: bool,
    creator: str = "",
    traceparent: str | None = None,
) -> list[Created | ConveyorError]:
    """One result per request: the created (or first) task, or why it was refused.
    Every task created gets the call's `traceparent`.

    With `atomic`, any refusal raises for the whole call and nothing is created.
    """
    names.parse(parent, "parent")
    if not 1 <= len(requests) <= MAX_BATCH:
        raise InvalidArgument.of("requests", f"must hold 1 to {MAX_BATCH} creates")
    # A byte cap too: the answer echoes every task, and must fit MAX_RESPONSE_BYTES.
    size = sum(r.ByteSize() for r in requests)
    if size > MAX_BATCH_BYTES:
        raise InvalidArgument.of(
            "requests",
            f"must be at most {MAX_BATCH_BYTES} bytes together, not {size}; split the batch",
        )
    results: Results = [None] * len(requests)
    validator = _Validator(parent, requests, ids, creator, traceparent, results)
    if atomic:
        await _atomic(pool, batcher, validator, results)
    else:
        await _chunked(pool, batcher, validator, results)
    return [r if r is not None else Internal("no result for this item") for r in results]


async def _atomic(
    pool: AsyncConnectionPool[Any],
    batcher: CreateBatcher,
    validator: _Validator,
    results: Results,
) -> None:
    pairs = validator.items(range(len(results)))
    refused = [r for r in results if isinstance(r, ConveyorError)]
    if refused:
        raise task_batches.merge_errors(refused)
    parent = validator.parent
    plain = [(i, new) for i, new in pairs if not _one_at_a_time(new)]
    deduped = [(i, new) for i, new in pairs if _one_at_a_time(new)]
    if not deduped:
        inserted = await batcher.create_many([n for _, n in plain], atomic=True)
        failures = task_batches.collect(plain, inserted, results, parent)
        if failures:
            raise task_batches.merge_errors(failures)
        return
    # All or nothing: every item in one transaction, each dedupe item a savepoint.
    async with pool.connection() as conn, conn.transaction():
        failures = await _dedupe_items(conn, deduped, results, parent)
        if failures:
            raise task_batches.merge_errors(failures)
        if plain:
            inserted = await insert_batch(
                conn, [n for _, n in plain], upsert_queue=[True] * len(plain), atomic=True
            )
            failures = task_batches.collect(plain, inserted, results, parent)
            if failures:
                raise task_batches.merge_errors(failures)


async def _chunked(
    pool: AsyncConnectionPool[Any],
    batcher: CreateBatcher,
    validator: _Validator,
    results: Results,
) -> None:
    sent: list[tuple[list[Pair], asyncio.Future[list[Result]]]] = []
    deduped: list[Pair] = []
    for positions in chunks(validator.requests):
        plain: list[Pair] = []
        for pair in validator.items(positions):
            # _one_at_a_time inlined: one pass, no call per item.
            new = pair[1]
            if new.dedupe is None and not new.depends_on:
                plain.append(pair)
            else:
                deduped.append(pair)
        if plain:
            insert = batcher.create_many([n for _, n in plain], atomic=False)
            sent.append((plain, asyncio.ensure_future(insert)))
            # Lets the insert reach the database before the next chunk is validated.
            await asyncio.sleep(0)
    outcomes = await asyncio.gather(*(f for _, f in sent), return_exceptions=True)
    for (plain, _), inserted in zip(sent, outcomes, strict=True):
        if isinstance(inserted, BaseException):
            raise inserted
        task_batches.collect(plain, inserted, results, validator.parent)
    if deduped:
        async with pool.connection() as conn:
            await _dedupe_items(conn, deduped, results, validator.parent)


async def _dedupe_items(
    conn: AsyncConnection[Any],
    items: Sequence[Pair],
    results: Results,
    parent: str,
) -> list[ConveyorError]:
    """Creates the dedupe items one after another (a later duplicate sees the first)."""
    failures: list[ConveyorError] = []
    for i, new in items:
        try:
            results[i] = await task_dependencies.create_unbatched(
                conn, new, parent, f"requests[{i}]."
            )
        except NotFound:
            raise  # the project: the whole call is NOT_FOUND
        except ConveyorError as error:
            results[i] = error
            failures.append(error)
    return failures
