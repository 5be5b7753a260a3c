"""Connection loss: which psycopg errors mean "the database is unreachable", the probe
that asks the pool whether it can reach the database again, and the backoff (tenacity)
with which loops and the LISTEN connection reconnect after an outage.

The one place a lost connection becomes a domain error (errors.Unavailable, UNAVAILABLE
with RetryInfo on the wire): the RPC boundary asks `unavailable_from` about every error
it did not raise on purpose, so an outage is never reported as INTERNAL.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta

import psycopg
import psycopg_pool
import tenacity

from conveyor.server import errors
from conveyor.server.store import sql
from conveyor.server.store.db import Pool

__all__ = [
    "RECONNECT_MAX",
    "RETRY_AFTER",
    "discard_dead",
    "is_connection_loss",
    "ping",
    "reconnecting",
    "sleep",
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


RECONNECT_MAX = 10.0
"""The longest wait between two reconnect attempts during an outage, in seconds."""


async def sleep(seconds: float, *, who: str) -> None:
    """How reconnect backoff waits (`who` names the waiting loop; a seam for tests)."""
    await asyncio.sleep(seconds)


def reconnecting(
    who: str,
    *,
    initial: float,
    retry: Callable[[BaseException], bool] = is_connection_loss,
    wait: Callable[[float], Awaitable[None]] | None = None,
) -> tenacity.AsyncRetrying:
    """Retries while `retry(error)` holds (by default: the database is unreachable),
    waiting `initial` seconds doubling up to RECONNECT_MAX, with up to `initial` of
    jitter, for as long as it takes (cancel the caller to stop). Other errors are raised.

    `wait` replaces the plain sleep (the event listener polls its subscribers while it
    waits). A fresh object per outage starts again at `initial`.
    """

    async def default_wait(seconds: float) -> None:
        await sleep(seconds, who=who)

    return tenacity.AsyncRetrying(
        wait=tenacity.wait_exponential(multiplier=initial, max=RECONNECT_MAX - initial)
        + tenacity.wait_random(0, initial),
        retry=tenacity.retry_if_exception(retry),
        reraise=True,
        sleep=wait or default_wait,
    )
