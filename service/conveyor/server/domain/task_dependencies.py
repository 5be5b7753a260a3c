"""Tasks that wait for other tasks (Task.depends_on; issue 19 point 4).

A task with dependencies bypasses the CreateBatcher, like a dedupe create: in one
transaction (a savepoint inside a caller's) it is inserted SCHEDULED, its dependencies
are locked and checked, and its edges and waiting count are written; dependencies that
have ended already are resolved at once (so it may leave that transaction QUEUED, or
CANCELLED by its policy). The transactions that end its other dependencies release or
cancel it (the triggers of migration 0023), whatever code path ends them, so nothing
polls the waiting tasks.

Dependencies must exist when the task is created: a BatchCreateTasks item cannot name
another item of its batch, since the server chooses task names. A missing one is
INVALID_ARGUMENT with a violation on `task.depends_on[i]`, like a missing parent_task.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from psycopg import AsyncConnection, errors

from conveyor.server.domain import task_dedupe
from conveyor.server.domain.task_dedupe import Created, outcome
from conveyor.server.errors import Internal, Unavailable, Violations
from conveyor.server.states import TERMINAL
from conveyor.server.store import task_dependencies as dependency_store
from conveyor.server.store import tasks as task_store
from conveyor.server.store.task_inserts import NewTask, Outcome, insert_batch
from conveyor.server.store.task_rows import TaskRow

__all__ = ["attach", "create", "create_unbatched", "retrying"]

# The dependencies are locked without waiting (store/queries/task_dependencies.sql): a
# row that a report or another create holds makes the create roll back and try again.
_TRIES = 30
_FIRST_PAUSE = 0.002
_MAX_PAUSE = 0.1
_TERMINAL = frozenset(s.value for s in TERMINAL)


async def create_unbatched(
    conn: AsyncConnection[Any], new: NewTask, parent: str, prefix: str
) -> Created:
    """A create outside the batcher: with a dedupe_policy, or with depends_on, or both."""
    if new.dedupe is None:
        return await create(conn, new, parent, prefix)
    if not new.depends_on:
        return await task_dedupe.create(conn, new, parent, prefix)
    return await retrying(lambda: task_dedupe.create(conn, new, parent, prefix, attach=attach))


async def create(conn: AsyncConnection[Any], new: NewTask, parent: str, prefix: str) -> Created:
    """Creates `new`, which has depends_on, and returns it as it left the transaction."""

    async def once() -> Created:
        async with conn.transaction():
            (result,) = await insert_batch(conn, [new], upsert_queue=[True])
            if result.outcome is not Outcome.CREATED:
                # A request_id replay returns the first task; the rest raise.
                return outcome(result, new, parent, prefix)
            return Created(existing=await attach(conn, new, prefix))

    return await retrying(once)


async def retrying(create: Callable[[], Awaitable[Created]]) -> Created:
    """Runs `create` (one transaction that attaches) again while a dependency is busy."""
    pause = _FIRST_PAUSE
    for _ in range(_TRIES):
        try:
            return await create()
        except (errors.LockNotAvailable, errors.DeadlockDetected):
            await asyncio.sleep(pause * (0.5 + random.random()))
            pause = min(pause * 2, _MAX_PAUSE)
    raise Unavailable(
        "the tasks this one depends on kept changing; try again",
        reason="DEPENDENCIES_BUSY",
        retry_after=timedelta(seconds=1),
    )


async def attach(conn: AsyncConnection[Any], new: NewTask, prefix: str) -> TaskRow:
    """Makes the just-inserted `new` wait for its dependencies (in the caller's
    transaction); InvalidArgument naming each one that does not exist."""
    found = await dependency_store.lock(conn, new.project, new.depends_on)
    v = Violations()
    for i, dependency in enumerate(new.depends_on):
        if dependency not in found:
            v.add(f"{prefix}task.depends_on[{i}]", "does not exist")
    v.raise_if_any()
    await dependency_store.attach(
        conn,
        new.project,
        new.id,
        new.depends_on,
        policy=new.dependency_failure_policy,
        ended={d: state for d, state in found.items() if state in _TERMINAL},
    )
    row = await task_store.get_row(conn, new.project, new.id)
    if row is None:
        raise Internal(f"task {new.id} vanished while it was created")
    return row
