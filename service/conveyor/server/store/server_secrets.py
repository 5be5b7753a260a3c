"""Secrets shared by every replica, created once and then only read."""

from __future__ import annotations

import secrets

from conveyor.server.store import sql
from conveyor.server.store.db import Pool

__all__ = ["SERVER_KEY", "get_or_create"]

SERVER_KEY = "server_key"
"""The name of the key that signs and encrypts what the server hands out (page tokens,
purge tokens) and must verify on any replica."""


async def get_or_create(pool: Pool, name: str, *, size: int = 32) -> bytes:
    """The secret called `name`, creating `size` random bytes if there is none yet.

    Safe when replicas race: each offers its own random value, the first insert wins,
    and everyone reads the winner. The read is a separate statement on purpose: a single
    statement's snapshot could predate the winner's commit and see nothing.
    """
    async with pool.connection() as conn:
        await conn.execute(
            sql.load("server_secret_insert"),
            {"name": name, "value": secrets.token_bytes(size)},
        )
        cursor = await conn.execute(sql.load("server_secret_get"), {"name": name})
        row = await cursor.fetchone()
    if row is None:
        raise RuntimeError(f"server secret {name!r} vanished right after it was written")
    value = row[0]
    if not isinstance(value, bytes):
        raise TypeError(f"server secret {name!r} is {type(value).__name__}, expected bytes")
    return value
