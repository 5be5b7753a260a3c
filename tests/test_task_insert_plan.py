"""The create statement's plan (task_insert_batch.sql) as the server runs it: a generic plan
(store/db.py sets plan_cache_mode = force_generic_plan), made whenever the connection
prepares it, whatever the table's statistics say by then."""

from __future__ import annotations

import re

import psycopg

from conveyor.server.domain.task_ids import TaskIds
from conveyor.server.domain.task_input import new_task
from conveyor.server.store.task_inserts import INSERT_STATEMENT, insert_batch
from conveyor.v1 import task_pb2


def _generic(statement: str) -> str:
    """The statement with $n placeholders, as EXPLAIN (GENERIC_PLAN) takes it."""
    names: dict[str, str] = {}
    return re.sub(r"%\((\w+)\)s", lambda m: names.setdefault(m[1], f"${len(names) + 1}"), statement)


async def test_a_burst_of_creates_never_turns_a_lookup_into_a_scan(database_url: str) -> None:
    """With thousands of tasks and no statistics (autovacuum off, nothing analyzed), the
    project, parent and queue lookups stay primary-key probes. The parent lookup used
    to be a hash join over a Seq Scan of the whole tasks table once the statistics
    predated a burst: its cost grew with the table at every create."""
    ids = TaskIds()
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await conn.execute("ALTER TABLE tasks SET (autovacuum_enabled = false)")
        for _ in range(6):
            items = [
                new_task(
                    task_pb2.Task(kind="k", queue="q"), project="default", request_id="", ids=ids
                )
                for _ in range(500)
            ]
            await insert_batch(conn, items, upsert_queue=[True] * len(items))
        cur = await conn.execute(
            "SELECT last_analyze, last_autoanalyze FROM pg_stat_user_tables WHERE relname = 'tasks'"
        )
        assert await cur.fetchone() == (None, None)
        cur = await conn.execute("EXPLAIN (GENERIC_PLAN) " + _generic(INSERT_STATEMENT))
        plan = "\n".join(row[0] for row in await cur.fetchall())
    assert "Seq Scan" not in plan, plan
    assert "Index Scan using tasks_pkey on tasks t" in plan, plan
