"""ANALYZE for the tables whose row counts swing with the queue.

The lease statement's plan rests on the planner's row estimates for `tasks`. After a
burst of enqueues, statistics from before it cost both ways of finding a queue's next
task (the ordered `tasks_ready_idx` scan, or every QUEUED task of the project through
`tasks_state_idx`, then a sort) at one row, and the planner may take the second: each
lease then reads the whole project's backlog (measured: 1.1 ms -> 6-7 ms per lease after
20,000 tasks landed in another queue) until autovacuum analyzes the table, which it
looks at once a minute by default and which Conveyor cannot tune on a server it does
not own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg import AsyncConnection
from psycopg import sql as pgsql

from conveyor.server.store import sql

__all__ = ["analyze_stale"]

_Q = sql.load_blocks("table_statistics")


async def analyze_stale(
    conn: AsyncConnection[Any],
    tables: Sequence[str],
    *,
    min_changes: int,
    fraction: float,
) -> list[str]:
    """Analyzes each of `tables` changed by at least max(min_changes, fraction x rows)
    rows since its last analyze, unless another replica is at it; returns those done."""
    cur = await conn.execute(
        _Q["stale"], {"tables": list(tables), "min_changes": min_changes, "fraction": fraction}
    )
    done = []
    for (table,) in await cur.fetchall():
        async with conn.transaction():
            claimed = await conn.execute(_Q["claim"], {"table": table})
            row = await claimed.fetchone()
            if row is None or not row[0]:
                continue
            await conn.execute(pgsql.SQL("ANALYZE {}").format(pgsql.Identifier(table)))
        done.append(table)
    return done
