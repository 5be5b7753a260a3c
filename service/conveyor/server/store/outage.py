"""Connection loss: which psycopg errors mean "the database is unreachable", and the
probe that asks the pool whether it can reach the database again.

The one place a lost connection becomes a domain error (errors.Unavailable, UNAVAILABLE
with RetryInfo on the wire): the RPC boundary asks `unavailable_from` about every error
it did not raise on purpose, so an outage is never reported as INTERNAL.
"""

from __future__ import annotations

from datetime import timedelta

import psycopg
import psycopg_pool

from conveyor.server import errors
from conveyor.server.store import sql
from conveyor.server.store.db import Pool

__all__ = [
    "RETRY_AFTER",
    "discard_dead",
    "is_connection_loss",
    "ping",
    "unavailable",
    "unavailable_from",
]

RETRY_AFTER = timedelta(seconds=1)
"""What UNAVAILABLE's RetryInfo tells a client to wait during an outage."""

_PING = sql.load("db_ping")

# SQLSTATEs that mean the server went away or refuses sessions: class 08 (connection
# exception) and the shutdown codes of class 57. Other OperationalErrors (a statement
# or lock timeout, 57014 and 55P03) are the query's own failure, not an outage.
_LOST_STATES = frozenset({"57P01", "57P02", "57P03"})


def is_connection_loss(error: BaseException) -> bool:
    """Whether `error` says the database could not be reached (not that a query failed).

    psycopg raises a bare OperationalError (no SQLSTATE) when the socket dies or a
    connection is refused; the pool raises PoolTimeout when it could not hand out a
    connection in time, and PoolClosed while the server stops.
    """
    if isinstance(error, psycopg_pool.PoolTimeout | psycopg_pool.PoolClosed):
        return True
    if not isinstance(error, psycopg.OperationalError):
        return False
    state = error.sqlstate
    return state is None or state.startswith("08") or state in _LOST_STATES


def unavailable_from(error: BaseException) -> errors.Unavailable | None:
    """The domain error for a lost connection, or None when `error` is something else."""
    return unavailable() if is_connection_loss(error) else None


async def ping(pool: Pool, *, within: float) -> bool:
    """True when a pooled connection answers within `within` seconds."""
    try:
        async with pool.connection(timeout=within) as conn:
            await conn.execute(_PING)
    except Exception as error:
        if not is_connection_loss(error):
            raise
        return False
    return True


async def discard_dead(pool: Pool) -> None:
    """Replaces the idle connections that died (in an outage) with new ones, so the calls
    after a recovery do not meet them. Connection errors are left to the next ping."""
    try:
        await pool.check()
    except Exception as error:
        if not is_connection_loss(error):
            raise


def unavailable() -> errors.Unavailable:
    """The error for a call refused because the database is known to be unreachable."""
    return errors.Unavailable(
        "the database is unreachable; retry later",
        reason="DATABASE_UNAVAILABLE",
        retry_after=RETRY_AFTER,
    )
