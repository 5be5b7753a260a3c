"""A lease where no limit applies runs without the admit block (migrations/0042).

The server guesses from the limits it saw lately; conveyor_admit_check rolls the lean
statement back where the admit block would have admitted, and the full statement runs.
So limits created while a worker leases, on any replica, hold at once, and a rolled-back
try leaves no trace (its reports are applied once).
"""

from __future__ import annotations

import uuid
from typing import Any

from psycopg import AsyncConnection

from conveyor.server.store import leases
from conveyor.server.store.db import Pool


async def _fill(conn: AsyncConnection[Any], queue: str, n: int, key: str | None = None) -> None:
    await conn.execute(
        "INSERT INTO tasks (project, id, queue, kind, input, state, root_task,"
        " concurrency_key, concurrency_limit)"
        " SELECT 'default', id, %s, 'k', '{}', 'QUEUED', id, %s, 1"
        " FROM (SELECT gen_random_uuid() AS id FROM generate_series(1, %s)) AS g",
        [queue, key, n],
    )


async def _prepared(conn: AsyncConnection[Any]) -> list[str]:
    cur = await conn.execute("SELECT statement FROM pg_prepared_statements")
    return [r[0] for r in await cur.fetchall() if "ready_plain" in r[0]]


async def test_an_unlimited_lease_runs_without_the_admit_block(pool: Pool) -> None:
    leases._ADMITTING.clear()
    async with pool.connection() as conn:
        await _fill(conn, "plain", 3)
        take = leases.TakeRow("w", ["plain"], 2, None)
        assert len((await leases.settle(conn, project="default", take=take)).leased) == 2
        # Drained of what it may take: the check runs the probe, finds nothing limited.
        assert len((await leases.settle(conn, project="default", take=take)).leased) == 1
        assert len((await leases.settle(conn, project="default", take=take)).leased) == 0
        statements = await _prepared(conn)
    assert statements and all("conveyor_admit_check(" in s for s in statements)
    assert not any("conveyor_admit(" in s for s in statements)


async def test_limits_that_appear_while_leasing_hold_at_once(pool: Pool) -> None:
    leases._ADMITTING.clear()
    async with pool.connection() as conn:
        await _fill(conn, "later", 3)
        take = leases.TakeRow("w", ["later"], 1, None)
        (first,) = (await leases.settle(conn, project="default", take=take)).leased
        # Another replica (or an UpdateQueue) limits the queue to one running task.
        await conn.execute(
            "INSERT INTO queues (project, id, max_concurrency) VALUES ('default', 'later', 1)"
        )
        assert (await leases.settle(conn, project="default", take=take)).leased == []
        done = leases.CompleteRow(first.id, first.lease_id, '{"ok": true}', "", None)  # type: ignore[arg-type]
        settled = await leases.settle(conn, project="default", completes=[done], take=take)
        assert list(settled.succeeded) == [first.id] and len(settled.leased) == 1
        cur = await conn.execute(
            "SELECT type, count(*) FROM events WHERE subject LIKE %s GROUP BY type",
            [f"%/{first.id}"],
        )
        # The rolled-back try left nothing: one start, one end.
        assert dict(await cur.fetchall()) == {"task.started": 1, "task.succeeded": 1}
        statements = await _prepared(conn)
    assert any("conveyor_admit(" in s for s in statements)


async def test_a_keyed_task_in_an_unlimited_queue_is_admitted(pool: Pool) -> None:
    leases._ADMITTING.clear()
    async with pool.connection() as conn:
        await _fill(conn, "mixed", 1)
        take = leases.TakeRow("w", ["mixed"], 5, None)
        assert len((await leases.settle(conn, project="default", take=take)).leased) == 1
        await _fill(conn, "mixed", 2, key="k")
        leased = (await leases.settle(conn, project="default", take=take)).leased
        assert [r.concurrency_key for r in leased] == ["k"]
        assert isinstance(leased[0].id, uuid.UUID)
