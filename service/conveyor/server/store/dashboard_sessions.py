"""Dashboard sessions: an API key exchanged for a cookie, stored as a hash of its secret."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from conveyor.server.store import sql
from conveyor.server.store.api_keys import KeyGrant, grant_of

_INSERT = sql.load("dashboard_session_insert")
_GRANT = sql.load("dashboard_session_grant")
_REVOKE = sql.load("dashboard_session_revoke")
_PRUNE = sql.load("dashboard_session_prune")


async def insert(
    conn: AsyncConnection[Any], *, id: str, key_id: str, secret_hash: bytes, ttl_seconds: float
) -> None:
    await conn.execute(_PRUNE)
    await conn.execute(
        _INSERT, {"id": id, "key_id": key_id, "secret_hash": secret_hash, "ttl": ttl_seconds}
    )


async def get_grant(conn: AsyncConnection[Any], session_id: str) -> KeyGrant | None:
    """The session's key grants (with the session's own secret hash), if it is live."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_GRANT, {"id": session_id})
        return grant_of(await cur.fetchone())


async def revoke(conn: AsyncConnection[Any], session_id: str) -> bool:
    cur = await conn.execute(_REVOKE, {"id": session_id})
    return await cur.fetchone() is not None
