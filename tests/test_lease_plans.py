"""The lease statement reads ready tasks in lease order and stops at its limit, whatever
the statistics say: a queue filled since the last ANALYZE (a burst) must not cost a scan
and sort of its whole backlog per lease (migrations/0037).

The plans are read from auto_explain (nested statements too, as NOTICEs on the test's
connection) while the statement runs, with the table's statistics as a fresh table has
them: none.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import psycopg
import pytest
import pytest_asyncio
from psycopg.rows import TupleRow

from conveyor.server.store import leases as lease_store

PROJECT = "default"
BACKLOG = 24_000
LIMIT = 10
# A scan of `tasks` (or one of its indexes) and the rows it returned.
_TASK_SCAN = re.compile(r"Scan (?:using (\w+) )?on tasks\b.*\(actual (?:time=\S+ )?rows=([\d.]+)")


@pytest_asyncio.fixture
async def plans_conn(database_url: str) -> AsyncIterator[psycopg.AsyncConnection[TupleRow]]:
    """An autocommit connection that receives the plan of every statement it runs (and of
    the statements in the functions they call) as NOTICEs, and a queue `q` with BACKLOG
    ready tasks inserted without ANALYZE."""
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        stats = await conn.execute(
            "SELECT last_analyze, last_autoanalyze FROM pg_stat_user_tables WHERE relname = 'tasks'"
        )
        assert await stats.fetchone() == (None, None)
        await conn.execute(
            """
            INSERT INTO tasks (project, id, queue, kind, input, state, root_task)
            SELECT %s, id, 'q', 'bench.noop', jsonb_build_object('i', i), 'QUEUED', id
            FROM (SELECT gen_random_uuid() AS id, i FROM generate_series(1, %s) AS i) AS g
            """,
            [PROJECT, BACKLOG],
        )
        await conn.execute("LOAD 'auto_explain'")
        for name, value in (
            ("log_min_duration", "0"),
            ("log_nested_statements", "on"),
            ("log_analyze", "on"),
            ("log_timing", "off"),
            ("log_level", "notice"),
        ):
            await conn.execute(f"SET auto_explain.{name} = {value}")
        yield conn


def _task_scans(plans: list[str]) -> list[tuple[str, float]]:
    return [
        (m[1] or "seq", float(m[2]))
        for plan in plans
        for line in plan.splitlines()
        if (m := _TASK_SCAN.search(line))
    ]


@pytest.mark.parametrize("plan_cache_mode", ["force_custom_plan", "force_generic_plan"])
async def test_the_ready_scan_stops_at_the_limit_without_statistics(
    plans_conn: psycopg.AsyncConnection[TupleRow], plan_cache_mode: str
) -> None:
    await plans_conn.execute(f"SET plan_cache_mode = {plan_cache_mode}")
    plans: list[str] = []
    plans_conn.add_notice_handler(lambda d: plans.append(d.message_primary or ""))
    take = lease_store.TakeRow(worker="w1", queues=["q"], limit=LIMIT, lease_ms=None)
    settled = await lease_store.settle(plans_conn, project=PROJECT, take=take)
    assert len(settled.leased) == LIMIT
    scans = _task_scans(plans)
    assert ("tasks_ready_idx", LIMIT) in scans, plans
    # Nothing read the backlog: every scan of tasks returned at most the take.
    assert max(rows for _, rows in scans) <= LIMIT, plans
    assert not any(re.search(r"Sort Key: t\w*\.priority", plan) for plan in plans), plans


async def test_the_admission_candidates_stop_at_their_window_without_statistics(
    plans_conn: psycopg.AsyncConnection[TupleRow],
) -> None:
    """A queue with a max_concurrency is leased through conveyor_admit, which reads
    conveyor_lease_candidates: its scan of each queue stops at the window too."""
    await plans_conn.execute(
        "INSERT INTO queues (project, id, max_concurrency) VALUES (%s, 'q', 1000)", [PROJECT]
    )
    plans: list[str] = []
    plans_conn.add_notice_handler(lambda d: plans.append(d.message_primary or ""))
    take = lease_store.TakeRow(worker="w1", queues=["q"], limit=LIMIT, lease_ms=None)
    settled = await lease_store.settle(plans_conn, project=PROJECT, take=take)
    assert len(settled.leased) == LIMIT
    scans = _task_scans(plans)
    assert any(index == "tasks_ready_idx" for index, _ in scans), plans
    # The window: 4 candidates per wanted task.
    assert max(rows for _, rows in scans) <= lease_store.WINDOW * LIMIT, plans
