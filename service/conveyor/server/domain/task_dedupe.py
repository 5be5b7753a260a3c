"""Creating a task with a dedupe_policy (DESIGN.md section 3, Dedupe).

Such a task bypasses the CreateBatcher: in one transaction (a savepoint inside a
caller's) it claims its key in task_dedupe_keys and is inserted, or, when the key is
held, the holder is locked and on_conflict applied to it. The claim is one
INSERT ... ON CONFLICT, so concurrent creates with one key make one task.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection

from conveyor.server.domain import request_ids
from conveyor.server.errors import AlreadyExists, Internal, InvalidArgument, NotFound
from conveyor.server.store import task_dedupe as dedupe_store
from conveyor.server.store.task_inserts import Inserted, NewTask, Outcome, Result, insert_batch
from conveyor.server.store.task_rows import TaskRow

__all__ = ["Created", "create", "outcome"]

_TRIES = 5
# A holder in one of these states has not started: REPLACE_INPUT and DEBOUNCE update it.
_NOT_STARTED = ("SCHEDULED", "QUEUED", "AWAITING_APPROVAL")


@dataclass(frozen=True, slots=True)
class Created:
    """A create's answer: a new task (what was asked plus what the insert decided), or
    the task an earlier create with the same request_id made, or (`deduped`) the task
    holding the dedupe key."""

    new: NewTask | None = None
    inserted: Inserted | None = None
    existing: TaskRow | None = None
    deduped: bool = False  # `existing` holds the dedupe key (BatchCreateTasks: existing_task)


class _Undo(Exception):
    """Rolls back a dedupe claim whose task was not inserted; carries the insert's result."""

    def __init__(self, result: Result) -> None:
        super().__init__(result.outcome.value)
        self.result = result


def outcome(result: Result, new: NewTask, parent: str, prefix: str) -> Created:
    if result.outcome is Outcome.CREATED:
        return Created(new=new, inserted=result.inserted)
    if result.outcome is Outcome.EXISTING:
        return Created(existing=result.row)
    if result.outcome is Outcome.REUSED and result.row is not None:
        raise request_ids.reused(new.request_id or "", f"{parent}/tasks/{result.row.id}")
    if result.outcome is Outcome.NO_PROJECT:
        raise NotFound(f"{parent} does not exist", metadata={"resource": parent})
    if result.outcome is Outcome.NO_PARENT:
        raise InvalidArgument.of(f"{prefix}task.parent_task", "does not exist")
    raise Internal(f"unexpected create outcome {result.outcome}")


Attach = Callable[[AsyncConnection[Any], NewTask, str], Awaitable[TaskRow]]


async def create(
    conn: AsyncConnection[Any],
    new: NewTask,
    parent: str,
    prefix: str,
    *,
    attach: Attach | None = None,
) -> Created:
    """Creates `new` if it can claim its dedupe key, else applies its on_conflict.

    One transaction (a savepoint inside a caller's): the claim and the insert, or the
    locked holder and its update, commit together, so concurrent creates with one key
    make one task and every one of them names it. `attach` runs after the insert in
    that transaction (task_dependencies.attach) and its row is the answer.
    """
    dedupe = new.dedupe
    assert dedupe is not None
    try:
        for _ in range(_TRIES):
            async with conn.transaction():
                if await dedupe_store.claim(
                    conn, new.project, dedupe.key, new.id, dedupe.window_ms
                ):
                    (result,) = await insert_batch(conn, [new], upsert_queue=[True])
                    if result.outcome is not Outcome.CREATED:
                        raise _Undo(result)
                    if attach is not None:
                        return Created(existing=await attach(conn, new, prefix))
                    return Created(new=new, inserted=result.inserted)
                holder = await dedupe_store.holder(conn, new.project, dedupe.key)
                if holder is None:
                    continue  # its holder was deleted meanwhile: claim again
                return await _on_conflict(conn, new, holder)
    except _Undo as undo:
        return outcome(undo.result, new, parent, prefix)
    raise Internal(f"dedupe key {dedupe.key!r} kept changing hands; try again")


async def _on_conflict(conn: AsyncConnection[Any], new: NewTask, holder: TaskRow) -> Created:
    dedupe = new.dedupe
    assert dedupe is not None
    name = f"projects/{holder.project}/tasks/{holder.id}"
    if dedupe.on_conflict == "REJECT":
        raise AlreadyExists(
            f"dedupe key {dedupe.key!r} is held by {name}",
            metadata={"task": name, "key": dedupe.key},
        )
    if dedupe.on_conflict in ("REPLACE_INPUT", "DEBOUNCE"):
        updated = await dedupe_store.update_holder(
            conn,
            holder.project,
            holder.id,
            key=dedupe.key,
            input_text=new.input,
            debounce=dedupe.on_conflict == "DEBOUNCE",
            window_ms=dedupe.window_ms,
            sources=_NOT_STARTED,
        )
        if updated is not None:
            holder = updated  # else it has started: returned unchanged
    return Created(existing=holder, deduped=True)
