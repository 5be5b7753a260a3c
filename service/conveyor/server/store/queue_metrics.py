"""The queue metrics' snapshot (queue_metrics*.sql): counted by one replica per
interval, shared with the others through the queue_metrics_snapshot row."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from conveyor.server.store import sql

__all__ = ["QueueStates", "read", "shared"]

_COUNT = sql.load("queue_metrics")
_READ = sql.load("queue_metrics_read")
_LOCK = sql.load("queue_metrics_lock")
_STORE = sql.load("queue_metrics_store")


@dataclass(frozen=True, slots=True)
class QueueStates:
    project: str
    queue: str
    state: str
    tasks: int
    oldest_queued_seconds: float | None


def _states(rows: list[dict[str, Any]]) -> list[QueueStates]:
    return [
        QueueStates(
            r["project"],
            r["queue"],
            r["state"],
            int(r["tasks"]),
            None if r["oldest_queued_seconds"] is None else float(r["oldest_queued_seconds"]),
        )
        for r in rows
    ]


async def read(conn: AsyncConnection[Any]) -> list[QueueStates]:
    """Counts the live tasks now (the grouped query itself)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_COUNT)
        return _states(await cur.fetchall())


async def shared(conn: AsyncConnection[Any], max_age: float) -> tuple[list[QueueStates], bool]:
    """The snapshot, taken afresh (True) only when the stored one is older than
    `max_age` seconds and no other replica is taking it right now."""
    async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_READ)
        stored = await cur.fetchone()
        if stored is not None and float(stored["age_seconds"]) < max_age:
            return _states(stored["queues"]), False
        await cur.execute(_LOCK)
        locked = await cur.fetchone()
        if not (locked and locked["locked"]):
            return ([] if stored is None else _states(stored["queues"])), False
        states = await read(conn)
        await cur.execute(_STORE, {"queues": Jsonb([asdict(s) for s in states])})
        return states, True
