"""The per-project bulk-action lock: a PostgreSQL session advisory lock (bulk_locks.sql).

Every function takes the connection that holds (or tries) the lock; the caller keeps
it out of the pool until `unlock`, since the lock belongs to that session.
"""

from __future__ import annotations

import hashlib
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from conveyor.server.store import sql

__all__ = ["holder", "try_lock", "unlock"]

_SQL = sql.load_blocks("bulk_locks")
# The advisory-lock key space of bulk actions (other advisory locks use other spaces).
SPACE = 0x0B_0C_41
_LABEL_MAX = 63  # PostgreSQL truncates application_name at NAMEDATALEN - 1


def _key(project: str) -> int:
    # A stable positive int4 per project (hashtext is not promised stable across versions).
    return int.from_bytes(hashlib.sha256(project.encode()).digest()[:4], "big") & 0x7FFF_FFFF


async def try_lock(conn: AsyncConnection[Any], project: str, label: str) -> str | None:
    """Labels the session and takes the project's lock; the previous label when it was
    taken (pass it to `unlock`), None (label restored) when another session holds it."""
    params = {"space": SPACE, "key": _key(project), "label": label[:_LABEL_MAX]}
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_SQL["label"], params)
        row = await cur.fetchone()
        previous = str(row["previous"]) if row else ""
        await cur.execute(_SQL["try_lock"], params)
        locked = await cur.fetchone()
        if locked and locked["locked"]:
            return previous
        await cur.execute(_SQL["relabel"], {"previous": previous})
    return None


async def holder(conn: AsyncConnection[Any], project: str) -> str:
    """The label of the session holding the project's lock ('' when none does now)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_SQL["holder"], {"space": SPACE, "key": _key(project)})
        row = await cur.fetchone()
    return str(row["application_name"]) if row else ""


async def unlock(conn: AsyncConnection[Any], project: str, previous: str) -> None:
    """Releases the project's lock and restores the session's label."""
    await conn.execute(_SQL["unlock"], {"space": SPACE, "key": _key(project), "previous": previous})
