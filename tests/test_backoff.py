"""The task retry delay exists twice: conveyor_backoff_ms in SQL (the reaper and the
report statement compute it where the row is) and retry_policy.delay_ms in Python.
This holds them equal on a grid that covers every policy kind, the first attempts, the
exponent's cap, zero and huge durations, and the ends of the random draw."""

from __future__ import annotations

import itertools

import psycopg
from psycopg.rows import TupleRow

from conveyor.server.domain.retry_policy import delay_ms

BACKOFFS = ("EXPONENTIAL_JITTER", "LINEAR", "FIXED")
ATTEMPTS = (0, 1, 2, 3, 7, 30, 62, 63, 64, 1000)
INITIAL_MS = (0, 1, 50, 1_000, 86_400_000)
MAX_MS = (0, 1, 999, 60_000, 604_800_000)
RANDS = (0.0, 1e-9, 0.25, 0.5, 0.75, 0.999999999)


async def test_sql_backoff_equals_the_python_one_on_a_grid(
    db_conn: psycopg.AsyncConnection[TupleRow],
) -> None:
    grid = list(itertools.product(BACKOFFS, ATTEMPTS, INITIAL_MS, MAX_MS, RANDS))
    cur = await db_conn.execute(
        "SELECT conveyor_backoff_ms(b, a, i, m, r)"
        " FROM unnest(%s::text[], %s::int[], %s::bigint[], %s::bigint[], %s::float8[])"
        " WITH ORDINALITY AS g (b, a, i, m, r, n) ORDER BY n",
        [list(column) for column in zip(*grid, strict=True)],
    )
    in_sql = [row[0] for row in await cur.fetchall()]
    in_python = [delay_ms(*point) for point in grid]
    differ = [(p, s, py) for p, s, py in zip(grid, in_sql, in_python, strict=True) if s != py]
    assert not differ, differ[:10]
    assert len(in_sql) == len(grid) == 4500
