"""Request ids (AIP-155) of the creates other than CreateTask (tasks keep theirs in a
column, written by the batched insert). Every function runs inside the caller's
transaction, so a claim commits or rolls back with the resource it made."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection

from conveyor.server.store import sql

__all__ = ["Earlier", "claim", "earlier", "prune", "set_resource"]

_SQL = sql.load_blocks("request_ids")


@dataclass(frozen=True)
class Earlier:
    """What the first create with a request_id was sent with (hash) and made."""

    request_hash: str
    resource: str


def _key(project: str, method: str, request_id: str) -> dict[str, str]:
    return {"project": project, "method": method, "request_id": request_id}


async def claim(
    conn: AsyncConnection[Any], project: str, method: str, request_id: str, request_hash: str
) -> bool:
    """True when the request_id was free and is now this create's."""
    cur = await conn.execute(
        _SQL["claim"], {**_key(project, method, request_id), "request_hash": request_hash}
    )
    return await cur.fetchone() is not None


async def earlier(
    conn: AsyncConnection[Any], project: str, method: str, request_id: str
) -> Earlier | None:
    cur = await conn.execute(_SQL["get"], _key(project, method, request_id))
    row = await cur.fetchone()
    return Earlier(row[0], row[1]) if row is not None else None


async def prune(conn: AsyncConnection[Any], cutoff: datetime, limit: int) -> int:
    """Forgets up to `limit` request ids claimed before `cutoff`; returns how many."""
    cur = await conn.execute(_SQL["prune"], {"cutoff": cutoff, "limit": limit})
    return cur.rowcount


async def set_resource(
    conn: AsyncConnection[Any], project: str, method: str, request_id: str, resource: str
) -> None:
    await conn.execute(
        _SQL["set_resource"], {**_key(project, method, request_id), "resource": resource}
    )
