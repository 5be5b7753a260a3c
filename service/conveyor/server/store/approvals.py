"""The guarded UPDATEs of ApproveTask, RejectTask and the approval-timeout loop."""

from __future__ import annotations

import uuid
from typing import Any

from psycopg import AsyncConnection
from psycopg import sql as pgsql
from psycopg.rows import dict_row

from conveyor.server import states
from conveyor.server.states import State
from conveyor.server.store import sql
from conveyor.server.store.task_rows import TaskRow, task_row

__all__ = ["decide", "decide_timed_out"]

_DECIDE = sql.load_blocks("task_decide")
# The timeout loop's block names the waiting state itself (task_decide.sql says why).
assert states.sources("approve") == (State.AWAITING_APPROVAL,)


def _params() -> dict[str, Any]:
    """States and event types from the transition table."""
    waiting = State.AWAITING_APPROVAL
    return {
        "sources": [s.value for s in states.sources("approve")],
        "queued": states.target(waiting, "approve").value,
        "later": states.target(waiting, "approve_later").value,
        "rejected": states.target(waiting, "reject").value,
        "event_approved": states.EVENT_TYPES["approve"],
        "event_later": states.EVENT_TYPES["approve_later"],
        "event_rejected": states.EVENT_TYPES["reject"],
    }


def _statement(due: str) -> pgsql.Composed:
    return pgsql.SQL(_DECIDE["select"]).format(due=pgsql.SQL(_DECIDE[due]))


async def decide(
    conn: AsyncConnection[Any],
    project: str,
    id: uuid.UUID,
    *,
    approve: bool,
    approver: str,
    comment: str,
) -> TaskRow | None:
    """Approves or rejects the task if it is AWAITING_APPROVAL; else None."""
    params = _params() | {
        "project": project,
        "id": id,
        "decision": approve,
        "comment": comment,
        "approver": approver,
    }
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_statement("one"), params)
        row = await cur.fetchone()
    return task_row(row) if row else None


async def decide_timed_out(conn: AsyncConnection[Any], *, limit: int) -> int:
    """Applies the timeout action of up to `limit` overdue tasks; returns how many."""
    params = _params() | {"approver": "system", "limit": limit}
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_statement("timed_out"), params)
        return len(await cur.fetchall())
