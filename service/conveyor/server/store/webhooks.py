"""The webhook outbox: claiming due deliveries, recording attempts, pruning.

Rows are written by the tasks_webhook_outbox trigger (0004_events.sql) in the
transaction of each terminal transition; nothing here creates them.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection

from conveyor.server.store import sql

__all__ = ["AttemptRecord", "DeliveryRow", "attempts", "claim", "next_due", "prune", "record"]

_CLAIM = sql.load("webhook_claim")
_RECORD = sql.load("webhook_record")
_NEXT_DUE = sql.load("webhook_next_due")
_PRUNE = sql.load("webhook_prune")
_ATTEMPTS = sql.load("webhook_attempts_list")


@dataclass(frozen=True)
class DeliveryRow:
    """A claimed delivery, with the secrets to sign it with."""

    id: uuid.UUID
    project: str
    task_id: uuid.UUID
    event_type: str
    url: str
    task_json: str
    event_time: datetime
    attempt: int
    """The number of the attempt this claim is for (1 for the first)."""
    body: str | None
    create_time: datetime
    secret: str
    previous_secret: str | None
    """Set while a rotation's grace period runs."""


@dataclass(frozen=True)
class AttemptRecord:
    attempt: int
    start_time: datetime
    duration_ms: int
    status_code: int | None
    error: str


async def claim(conn: AsyncConnection[Any], limit: int, lease: float) -> list[DeliveryRow]:
    cur = await conn.execute(_CLAIM, {"limit": limit, "lease": lease})
    return [DeliveryRow(*row) for row in await cur.fetchall()]


async def record(
    conn: AsyncConnection[Any],
    row: DeliveryRow,
    *,
    body: str,
    start_time: datetime,
    duration_ms: int,
    status_code: int | None,
    error: str,
    delivered: bool,
    retry_delay: float,
    max_attempts: int,
    max_age: float,
) -> str | None:
    """Records an attempt; returns the delivery's new state (PENDING, DELIVERED or
    FAILED), or None when the claim had been taken over and the report was dropped."""
    cur = await conn.execute(
        _RECORD,
        {
            "id": row.id,
            "attempt": row.attempt,
            "body": body,
            "start_time": start_time,
            "duration_ms": duration_ms,
            "status_code": status_code,
            "error": error,
            "delivered": delivered,
            "retry_delay": retry_delay,
            "max_attempts": max_attempts,
            "max_age": max_age,
        },
    )
    result = await cur.fetchone()
    return str(result[0]) if result is not None else None


async def next_due(conn: AsyncConnection[Any]) -> float | None:
    """Seconds until the earliest pending delivery is due (negative: overdue)."""
    cur = await conn.execute(_NEXT_DUE)
    row = await cur.fetchone()
    return float(row[0]) if row is not None and row[0] is not None else None


async def prune(conn: AsyncConnection[Any], cutoff: datetime, limit: int) -> int:
    cur = await conn.execute(_PRUNE, {"cutoff": cutoff, "limit": limit})
    return cur.rowcount


async def attempts(conn: AsyncConnection[Any], delivery: uuid.UUID) -> list[AttemptRecord]:
    cur = await conn.execute(_ATTEMPTS, {"delivery": delivery})
    return [AttemptRecord(*row) for row in await cur.fetchall()]
