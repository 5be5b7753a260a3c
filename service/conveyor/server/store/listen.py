"""The statements of the replica's LISTEN connection (event_listen*.sql)."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection

from conveyor.server.store import sql

__all__ = ["listen", "ping"]

_LISTEN = sql.load("event_listen")
_PING = sql.load("event_listen_ping")


async def listen(conn: AsyncConnection[Any]) -> None:
    """Subscribes the connection to the wake-up channels (tasks, events, webhooks)."""
    await conn.execute(_LISTEN)


async def ping(conn: AsyncConnection[Any]) -> None:
    """A round trip that proves the connection is alive."""
    await conn.execute(_PING)
