"""CreateBatcher's flush policy: one flush in flight; what arrives meanwhile shares the next."""

from __future__ import annotations

import asyncio
import time

import psycopg
from psycopg_pool import AsyncConnectionPool

from conveyor.server.domain.task_ids import TaskIds
from conveyor.server.domain.task_input import new_task
from conveyor.server.store.task_batcher import CreateBatcher
from conveyor.server.store.task_inserts import NewTask, Outcome
from conveyor.v1 import task_pb2


async def _until_waiting_on_a_lock(database_url: str, within: float = 15.0) -> None:
    """Until a backend of this database waits for a lock."""
    deadline = time.monotonic() + within
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        while True:
            cur = await conn.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            row = await cur.fetchone()
            if row is not None and row[0] > 0:
                return
            assert time.monotonic() < deadline, "the flush never waited for the lock"
            await asyncio.sleep(0.01)


async def test_creates_arriving_during_a_flush_share_the_next_one(database_url: str) -> None:
    """Creates that arrive, one loop pass apart, while a flush is in flight all wait for
    it and then go in one statement (one commit), rather than a second flush starting
    for the first of them and a third for the rest; and they schedule nothing meanwhile."""
    ids = TaskIds()

    def item() -> NewTask:
        return new_task(task_pb2.Task(kind="k"), project="default", request_id="", ids=ids)

    async with (
        AsyncConnectionPool(
            database_url, min_size=1, max_size=4, kwargs={"autocommit": True}, open=False
        ) as pool,
        await psycopg.AsyncConnection.connect(database_url) as locker,
    ):
        batcher = CreateBatcher(pool)
        drains = 0
        drain = batcher._drain

        def counted() -> None:
            nonlocal drains
            drains += 1
            drain()

        batcher._drain = counted  # type: ignore[method-assign]
        # The insert's foreign-key check waits for this lock: the first flush stays in
        # flight until it is released.
        await locker.execute("SELECT 1 FROM projects WHERE id = 'default' FOR UPDATE")
        first = asyncio.ensure_future(batcher.create(item()))
        await _until_waiting_on_a_lock(database_url)
        later = [asyncio.ensure_future(batcher.create(item()))]
        for _ in range(3):
            await asyncio.sleep(0)
        later += [asyncio.ensure_future(batcher.create(item())) for _ in range(4)]
        for _ in range(3):
            await asyncio.sleep(0)
        await locker.rollback()
        results = await asyncio.gather(first, *later)
        await batcher.stop()
    assert [r.outcome for r in results] == [Outcome.CREATED] * 6
    # One drain per flush: the creates that came during the first scheduled none (each
    # did, and found the flush slot taken); its end scheduled the second.
    assert drains == 2
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cur = await conn.execute(
            "SELECT count(DISTINCT xid) FROM events WHERE type = 'task.created'"
        )
        row = await cur.fetchone()
    assert row is not None and row[0] == 2
