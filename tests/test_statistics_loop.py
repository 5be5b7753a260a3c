"""The statistics loop: ANALYZE of `tasks` once a burst made its statistics stale, by one
replica at a time; and the lease plan those statistics give."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import psycopg
from psycopg import AsyncRawCursor

from conveyor.server.loops.statistics import StatisticsLoop
from conveyor.server.store import leases
from conveyor.server.store.db import Pool


async def _burst(database_url: str, n: int) -> None:
    """n QUEUED tasks in one statement, its statistics flushed at once."""
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await conn.execute(
            "INSERT INTO tasks (project, id, queue, kind, state, root_task)"
            " SELECT 'default', id, 'burst', 'k', 'QUEUED', id"
            " FROM (SELECT gen_random_uuid() AS id FROM generate_series(1, %s)) AS g",
            [n],
        )
        await conn.execute("SELECT pg_stat_force_next_flush()")


async def _last_analyze(database_url: str) -> object:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT last_analyze FROM pg_stat_user_tables"
            " WHERE schemaname = current_schema() AND relname = 'tasks'"
        )
        row = await cur.fetchone()
        assert row is not None
        return row[0]


async def _until_counted(database_url: str, changes: int, within: float = 15.0) -> None:
    """Until the statistics views show `changes` rows changed since the last analyze."""
    deadline = time.monotonic() + within
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        while True:
            cur = await conn.execute(
                "SELECT n_mod_since_analyze FROM pg_stat_user_tables"
                " WHERE schemaname = current_schema() AND relname = 'tasks'"
            )
            row = await cur.fetchone()
            if row is not None and row[0] >= changes:
                return
            assert time.monotonic() < deadline, "the burst was never counted"
            await asyncio.sleep(0.1)


async def _until_analyzed(loop: StatisticsLoop, within: float = 15.0) -> None:
    # Backends publish their counters shortly after their transactions end.
    deadline = time.monotonic() + within
    while await loop.run_once() != ["tasks"]:
        assert time.monotonic() < deadline, "tasks was never found stale"
        await asyncio.sleep(0.2)


async def test_a_burst_gets_tasks_analyzed_once(pool: Pool, database_url: str) -> None:
    loop = StatisticsLoop(pool, min_changes=1000)
    await _burst(database_url, 300)
    await _until_counted(database_url, 300)
    assert await loop.run_once() == []  # below min_changes: left to autovacuum
    assert await _last_analyze(database_url) is None

    await _burst(database_url, 2000)
    await _until_analyzed(loop)
    assert await _last_analyze(database_url) is not None
    assert await loop.run_once() == []  # fresh now


async def test_a_replica_analyzing_makes_the_others_skip(pool: Pool, database_url: str) -> None:
    loop = StatisticsLoop(pool, min_changes=1000)
    await _burst(database_url, 2000)
    async with await psycopg.AsyncConnection.connect(database_url) as other:
        # Another replica holds the table's claim (its transaction stays open).
        await other.execute("SELECT pg_advisory_xact_lock(hashtext('conveyor.analyze.tasks'))")
        await _until_counted(database_url, 2000)
        assert await loop.run_once() == []
        assert await _last_analyze(database_url) is None
        await other.rollback()
    await _until_analyzed(loop)


async def test_once_analyzed_a_lease_reads_the_queue_in_order(
    pool: Pool, database_url: str
) -> None:
    """With fresh statistics (every task of one kind), the lease statement walks
    tasks_ready_idx in lease order and stops at its limit: no sort of the backlog. The
    walk is conveyor_ready_tasks' (0037), planned with sorting off: the statement calls it
    and sorts nothing itself (tests/test_lease_plans.py reads the function's plan)."""
    await _burst(database_url, 3000)
    await _until_analyzed(StatisticsLoop(pool, min_changes=1000))
    statement = leases._SETTLE_ONE_QUEUE
    params = dict.fromkeys(statement.names)
    params.update(project="default", worker="w", queue="burst", queues=["burst"], limit=1)
    async with (
        await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn,
        AsyncRawCursor(conn) as cur,
    ):
        await cur.execute("EXPLAIN (FORMAT JSON) " + statement.text, statement.args(params))
        row = await cur.fetchone()
    assert row is not None
    ready = next(p for p in _nodes(row[0][0]["Plan"]) if p.get("Subplan Name") == "CTE ready_plain")
    scans = [p for p in _nodes(ready) if "Scan" in p["Node Type"]]
    assert [(p["Node Type"], p.get("Function Name")) for p in scans] == [
        ("Function Scan", "conveyor_ready_tasks")
    ]
    assert not [p for p in _nodes(ready) if p["Node Type"] == "Sort"]


async def test_the_generic_lease_plan_reads_tasks_by_key(pool: Pool, database_url: str) -> None:
    """The plan a pool connection keeps (generic: force_generic_plan) reads the tasks it
    settles and leases by key: joined to the ready tasks, a plan sized by estimates hashed
    them against a scan of the whole table, a cost that grew with every task ever kept."""
    await _burst(database_url, 3000)
    await _until_analyzed(StatisticsLoop(pool, min_changes=1000))
    for statement in (leases._SETTLE_ONE_QUEUE, leases._SETTLE_MANY_QUEUES):
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            cur = await conn.execute("EXPLAIN (GENERIC_PLAN, FORMAT JSON) " + statement.text)
            row = await cur.fetchone()
        assert row is not None
        parts = {p["Subplan Name"]: p for p in _nodes(row[0][0]["Plan"]) if "Subplan Name" in p}
        for name in ("CTE succeeded", "CTE fail_targets", "CTE failed", "CTE leased"):
            scans = [
                (p["Node Type"], p.get("Index Cond", ""))
                for p in _nodes(parts[name])
                if p.get("Relation Name") == "tasks" and p["Node Type"] != "ModifyTable"
            ]
            # The reports may go through the RUNNING tasks of the project (few, as the
            # statistics say); the leased rows are found by id.
            assert scans and all(node != "Seq Scan" and cond for node, cond in scans), scans
            if name == "CTE leased":
                assert all("id = ANY" in cond for _, cond in scans), scans


def _nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    return [plan] + [n for child in plan.get("Plans", []) for n in _nodes(child)]


async def test_the_settle_plan_builds_event_changes_inline(database_url: str) -> None:
    """conveyor_task_change is inlined into the settle statement's plan: not called as a
    SQL function per event row (its own executor start each time), which PostgreSQL does
    for a function declared IMMUTABLE whose body is only STABLE."""
    for statement in (leases._SETTLE_ONE_QUEUE, leases._SETTLE_MANY_QUEUES):
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            cur = await conn.execute("EXPLAIN (GENERIC_PLAN, VERBOSE) " + statement.text)
            plan = "\n".join(row[0] for row in await cur.fetchall())
        # Its body (0040: to_jsonb of a composite row) is in the plan, its name is not.
        assert "to_jsonb" in plan
        assert "conveyor_task_change(" not in plan
