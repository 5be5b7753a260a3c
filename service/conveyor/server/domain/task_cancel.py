"""CancelTask in one transaction: the audit record, the state change and, with a
request_id (AIP-155), its claim, so a retried cancel answers the task instead of
being refused because the first one already cancelled it."""

from __future__ import annotations

import uuid
from typing import Any

from psycopg import AsyncConnection

from conveyor.server import states
from conveyor.server.domain import audit, request_ids
from conveyor.server.domain.auth import Principal
from conveyor.server.errors import FailedPrecondition, NotFound, PreconditionViolation
from conveyor.server.states import State
from conveyor.server.store import tasks as task_store
from conveyor.server.store.task_rows import TaskRow
from conveyor.v1 import enums_pb2

__all__ = ["cancel"]

_CANCEL_TRIES = 5
_METHOD = "CancelTask"


async def cancel(
    conn: AsyncConnection[Any],
    server_key: bytes | None,
    principal: Principal | None,
    name: str,
    project: str,
    task_id: uuid.UUID,
    reason: str,
    request_id: str = "",
    request_hash: str = "",
) -> TaskRow:
    """CANCELLED at once when waiting; cancel_requested when RUNNING; else refused.

    Runs inside the caller's transaction. A request_id already used with the same
    request returns the task as it is now and records nothing; with a different
    request it is ALREADY_EXISTS (REQUEST_ID_REUSED).
    """
    earlier = await request_ids.claim(conn, project, _METHOD, request_id, request_hash)
    if earlier is not None:
        current = await task_store.get_row(conn, project, task_id)
        if current is None:
            raise NotFound(f"{name} does not exist", metadata={"resource": name})
        return current
    await audit.record_change(
        conn,
        server_key,
        principal,
        enums_pb2.COMMAND_VERB_CANCEL_TASK,
        name,
        {"reason": reason},
        project=project,
    )
    sources = [s.value for s in states.sources("cancel")]
    for _ in range(_CANCEL_TRIES):
        row = await task_store.cancel(
            conn,
            project,
            task_id,
            reason=reason,
            sources=sources,
            event_type=states.EVENT_TYPES["cancel"],
        )
        if row is None:
            current = await task_store.get_row(conn, project, task_id)
            if current is None:
                raise NotFound(f"{name} does not exist", metadata={"resource": name})
            state = State(current.state)
            if state is State.RUNNING:
                row = await task_store.request_cancel(conn, project, task_id, reason=reason)
            elif state.value not in sources:
                states.target(state, "cancel", subject=name)  # raises: it is terminal
        if row is not None:
            await request_ids.made(conn, project, _METHOD, request_id, name)
            return row
        # It moved on between the two statements: try again from its new state.
    raise FailedPrecondition(
        f"{name} kept changing state; try again",
        reason="TASK_STATE_CONFLICT",
        violations=[PreconditionViolation("STATE", name, "the task kept changing state")],
    )
