"""API keys: stored as a hash of their secret, never the secret itself."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from conveyor.server.store import sql

_GET = sql.load("api_key_get")
_INSERT = sql.load("api_key_insert")
_LIST = sql.load("api_key_list")
_ROW = sql.load("api_key_row")
_DELETE = sql.load("api_key_delete")
_TOUCH = sql.load("api_key_touch")
_SYSTEM_EXISTS = sql.load("api_key_system_exists")
_DELETE_SYSTEM = sql.load("api_key_delete_system")
_BOOTSTRAP_LOCK = sql.load("api_key_bootstrap_lock")
_UPDATE = sql.load("api_key_update")


@dataclass(frozen=True)
class KeyGrant:
    """What authentication needs of a key."""

    id: str
    project: str
    role: str
    system: bool
    secret_hash: bytes
    rate_limits: dict[str, Any] = field(default_factory=dict)
    project_rate_limits: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class KeyRow:
    id: str
    project: str
    role: str
    display_name: str
    system: bool
    create_time: datetime
    last_used_time: datetime | None
    rate_limits: dict[str, Any] = field(default_factory=dict)


async def get_grant(conn: AsyncConnection[Any], key_id: str) -> KeyGrant | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_GET, {"id": key_id})
        return grant_of(await cur.fetchone())


def grant_of(row: dict[str, Any] | None) -> KeyGrant | None:
    """A KeyGrant from a row with id, project, role, system and secret_hash (and the
    key's and its project's rate_limits, when selected)."""
    if row is None:
        return None
    return KeyGrant(
        id=row["id"],
        project=row["project"],
        role=row["role"],
        system=row["system"],
        secret_hash=bytes(row["secret_hash"]),
        rate_limits=row.get("rate_limits") or {},
        project_rate_limits=row.get("project_rate_limits") or {},
    )


async def insert(
    conn: AsyncConnection[Any],
    *,
    id: str,
    project: str,
    role: str,
    display_name: str,
    secret_hash: bytes,
    system: bool = False,
    rate_limits: dict[str, Any] | None = None,
) -> KeyRow:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            _INSERT,
            {
                "id": id,
                "project": project,
                "role": role,
                "display_name": display_name,
                "secret_hash": secret_hash,
                "system": system,
                "rate_limits": Jsonb(rate_limits or {}),
            },
        )
        row = await cur.fetchone()
    assert row is not None
    return KeyRow(**row)


async def list_page(
    conn: AsyncConnection[Any], *, project: str, after: str, limit: int
) -> list[KeyRow]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_LIST, {"project": project, "after": after, "limit": limit})
        return [KeyRow(**r) for r in await cur.fetchall()]


async def get(conn: AsyncConnection[Any], *, project: str, id: str) -> KeyRow | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_ROW, {"project": project, "id": id})
        row = await cur.fetchone()
    return KeyRow(**row) if row is not None else None


async def delete(conn: AsyncConnection[Any], *, project: str, id: str, allow_system: bool) -> bool:
    cur = await conn.execute(_DELETE, {"project": project, "id": id, "allow_system": allow_system})
    return await cur.fetchone() is not None


async def update(
    conn: AsyncConnection[Any],
    *,
    project: str,
    id: str,
    allow_system: bool,
    display_name: str | None = None,
    rate_limits: dict[str, Any] | None = None,
) -> KeyRow | None:
    """Sets the fields that are not None; None when there is no such key (or it is a
    system key and not allow_system)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            _UPDATE,
            {
                "project": project,
                "id": id,
                "allow_system": allow_system,
                "set_display_name": display_name is not None,
                "display_name": display_name or "",
                "set_rate_limits": rate_limits is not None,
                "rate_limits": Jsonb(rate_limits or {}),
            },
        )
        row = await cur.fetchone()
    return KeyRow(**row) if row is not None else None


async def touch(conn: AsyncConnection[Any], key_id: str) -> None:
    await conn.execute(_TOUCH, {"id": key_id})


async def system_key_exists(conn: AsyncConnection[Any]) -> bool:
    cur = await conn.execute(_SYSTEM_EXISTS)
    row = await cur.fetchone()
    return bool(row and row[0])


async def delete_system(conn: AsyncConnection[Any]) -> list[str]:
    """Deletes every system key; returns their names (projects/P/apiKeys/ID)."""
    cur = await conn.execute(_DELETE_SYSTEM)
    return [f"projects/{project}/apiKeys/{id}" for id, project in await cur.fetchall()]


async def lock_bootstrap(conn: AsyncConnection[Any]) -> None:
    """Held until the end of the caller's transaction."""
    await conn.execute(_BOOTSTRAP_LOCK)
