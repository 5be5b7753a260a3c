"""The per-project bulk-action lock: a PostgreSQL transaction advisory lock (bulk_locks.sql).

Every function takes the connection that holds (or tries) the lock, inside a transaction
the caller keeps open until the action ends: committing or rolling back releases the
lock and the session's label. A transaction rather than a session lock, so the lock
and its label stay on one server session behind a transaction-mode pooler as well.
"""

from __future__ import annotations

import hashlib
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from conveyor.server.store import sql

__all__ = ["holder", "try_lock"]

_SQL = sql.load_blocks("bulk_locks")
# The advisory-lock key space of bulk actions (other advisory locks use other spaces).
SPACE = 0x0B_0C_41
_LABEL_MAX = 63  # PostgreSQL truncates application_name at NAMEDATALEN - 1


def _key(project: str) -> int:
    # A stable positive int4 per project (hashtext is not promised stable across versions).
    return int.from_bytes(hashlib.sha256(project.encode()).digest()[:4], "big") & 0x7FFF_FFFF


async def try_lock(conn: AsyncConnection[Any], project: str, label: str) -> bool:
    """Labels the session and takes the project's lock, both until the transaction
    ends; False when another session holds the lock."""
    params = {"space": SPACE, "key": _key(project), "label": label[:_LABEL_MAX]}
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_SQL["try_lock"], params)
        row = await cur.fetchone()
    return bool(row and row["locked"])


async def holder(conn: AsyncConnection[Any], project: str) -> str:
    """The label of the session holding the project's lock ('' when none does now)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_SQL["holder"], {"space": SPACE, "key": _key(project)})
        row = await cur.fetchone()
    return str(row["application_name"]) if row else ""
