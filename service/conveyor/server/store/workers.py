"""Worker rows: who is connected, with which queues and capacity, and what it runs."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from conveyor.server.errors import NotFound
from conveyor.server.store import sql
from conveyor.server.store.wrap import wrap_exceptions

_CONNECT = sql.load("worker_connect")
_TOUCH = sql.load("worker_touch")
_DISCONNECT = sql.load("worker_disconnect")
_GET = sql.load("worker_get")
_LIST = sql.load("worker_list")


@dataclass(frozen=True, slots=True)
class WorkerRow:
    project: str
    id: str
    queues: list[str]
    capacity: int
    labels: dict[str, str]
    sdk_version: str
    connected: bool
    connect_time: datetime
    last_seen_time: datetime
    session: uuid.UUID | None
    active_tasks: list[uuid.UUID]
    """Ids of the tasks it runs now (RUNNING under its name)."""

    @property
    def name(self) -> str:
        return f"projects/{self.project}/workers/{self.id}"


def _row(row: dict[str, Any]) -> WorkerRow:
    return WorkerRow(**{**row, "active_tasks": row.get("active_tasks") or []})


async def connect(
    conn: AsyncConnection[Any],
    *,
    project: str,
    id: str,
    queues: Sequence[str],
    capacity: int,
    labels: dict[str, str],
    sdk_version: str,
    session: uuid.UUID | None,
) -> WorkerRow | None:
    """Upserts the worker as connected (worker.connected when it was not); None when the
    project does not exist."""
    try:
        with wrap_exceptions(project):
            async with conn.cursor(row_factory=dict_row) as cur:
                await cur.execute(
                    _CONNECT,
                    {
                        "project": project,
                        "id": id,
                        "queues": list(queues),
                        "capacity": capacity,
                        "labels": Jsonb(labels),
                        "sdk_version": sdk_version,
                        "session": session,
                    },
                )
                row = await cur.fetchone()
    except NotFound:
        return None  # a worker of a project that does not exist
    assert row is not None, "an upsert returns its row"
    return _row(row)


async def touch(conn: AsyncConnection[Any], project: str, id: str, session: uuid.UUID) -> bool:
    """Refreshes last_seen_time; False when the session no longer holds the worker."""
    cur = await conn.execute(_TOUCH, {"project": project, "id": id, "session": session})
    return await cur.fetchone() is not None


async def disconnect(
    conn: AsyncConnection[Any], project: str, id: str, session: uuid.UUID, reason: str
) -> None:
    await conn.execute(
        _DISCONNECT, {"project": project, "id": id, "session": session, "reason": reason}
    )


async def get(conn: AsyncConnection[Any], project: str, id: str) -> WorkerRow | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_GET, {"project": project, "id": id})
        row = await cur.fetchone()
    return _row(row) if row else None


async def list_page(
    conn: AsyncConnection[Any], *, project: str, after: str, limit: int
) -> list[WorkerRow]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_LIST, {"project": project, "after": after, "limit": limit})
        return [_row(r) for r in await cur.fetchall()]
