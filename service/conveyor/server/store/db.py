"""The connection pool every request, loop and migration shares."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from psycopg import AsyncConnection
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool

__all__ = ["Pool", "open_pool", "prepare_at_once"]

Pool = AsyncConnectionPool[AsyncConnection[TupleRow]]
"""The pool type handed around the server (rows are tuples unless a cursor asks otherwise)."""


async def open_pool(
    url: str,
    *,
    min_size: int = 2,
    max_size: int = 20,
    open_timeout: float = 30.0,
    instrument: Callable[[AsyncConnection[Any]], None] | None = None,
    prepare: bool = True,
) -> Pool:
    """Open a pool on `url` and wait until its first `min_size` connections are up.

    Connections are in autocommit mode: every transaction is an explicit
    `async with conn.transaction():` in the code that owns it, and no statement runs in
    an implicit transaction that someone forgets to end (LISTEN needs this too).
    Raises psycopg_pool.PoolTimeout if the database cannot be reached within
    `open_timeout` seconds. `instrument` (tracing) is called on each new connection.

    `prepare=False` is for poolers that cannot track prepared statements (PgBouncer
    before 1.21 in transaction mode): nothing is prepared on the server, so any server
    connection can run any statement, and no per-connection SET is made, since the next
    transaction may run on another server connection (docs/scaling.md says where
    `plan_cache_mode` goes instead).
    """
    kwargs: dict[str, Any] = {"autocommit": True}
    configure: Callable[[AsyncConnection[Any]], Awaitable[None]] | None = _configure
    if not prepare:
        kwargs["prepare_threshold"] = None
        configure = None
    if instrument is not None:
        configure = _instrumented(instrument, configure)
    if "application_name" not in conninfo_to_dict(url):
        # Names our sessions in pg_stat_activity, unless the operator chose a name.
        kwargs["application_name"] = "conveyor"
    pool: Pool = AsyncConnectionPool(
        url,
        min_size=min_size,
        max_size=max_size,
        kwargs=kwargs,
        configure=configure,
        name="conveyor",
        open=False,
    )
    try:
        await pool.open(wait=True, timeout=open_timeout)
    except BaseException:
        await pool.close()
        raise
    return pool


async def _configure(conn: AsyncConnection[Any]) -> None:
    """Generic plans for prepared statements (psycopg prepares any statement run five
    times, and the lease statement at once). Left to choose, PostgreSQL keeps planning
    the lease statement afresh at every call: NULL parts make each custom plan look
    cheaper than the generic one, and planning that statement costs about 1 ms, more
    than running it. Our statements take their shape from the SQL text (optional filters
    are composed in or out; the few `%(x)s IS NULL OR` tests are on small tables), so
    one plan serves every call.

    TimeZone UTC: psycopg hands a timestamptz out in the session's zone, and a zone
    other than its `timezone.utc` (a stock server's 'Etc/UTC' is a ZoneInfo) costs a
    conversion per value read (~0.37 against ~0.14 us; a settle reads ~8 per task) and
    an offset lookup per value rendered. Only instants are read or stored; PostgreSQL
    renders a timestamptz as text (events' snapshots) with the session's offset, which
    every reader parses back to the same instant.
    """
    await conn.execute("SET plan_cache_mode = force_generic_plan")
    await conn.execute("SET TimeZone = 'UTC'")


def prepare_at_once(conn: AsyncConnection[Any]) -> bool | None:
    """`prepare=` for a hot statement: True (prepare at its first run) unless the
    connection prepares nothing (an open_pool with prepare=False), where psycopg's
    default (None: follow the connection's prepare_threshold) keeps it unprepared."""
    return True if conn.prepare_threshold is not None else None


def _instrumented(
    instrument: Callable[[AsyncConnection[Any]], None],
    then: Callable[[AsyncConnection[Any]], Awaitable[None]] | None,
) -> Callable[[AsyncConnection[Any]], Awaitable[None]]:
    async def configure(conn: AsyncConnection[Any]) -> None:
        if then is not None:
            await then(conn)
        instrument(conn)

    return configure
