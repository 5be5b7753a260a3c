"""Event ids are cursors in commit order: a reader never skips an event, never repeats one.

These drive the store directly against committed data, with writers whose transactions
interleave on purpose: some take their transaction id long before they write, some hold
their events uncommitted while later writers commit, some roll back.
"""

from __future__ import annotations

import asyncio
import random

import psycopg
import pytest

from conveyor.server.store import event_rows as store

PROJECT = "default"


async def _writer(
    url: str, seed: int, transactions: int, committed: set[int], rolled_back: set[int]
) -> None:
    rng = random.Random(seed)
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        for _ in range(transactions):
            ids: list[int] = []
            try:
                async with conn.transaction():
                    if rng.random() < 0.5:
                        # Takes the transaction id now and writes later: a naive reader
                        # ordering by insert order would pass over these events.
                        await conn.execute("SELECT pg_current_xact_id()")
                        await asyncio.sleep(rng.random() * 0.01)
                    for _ in range(rng.randint(1, 3)):
                        cur = await conn.execute(
                            "INSERT INTO events (project, type) VALUES (%s, 'test.write') "
                            "RETURNING id",
                            (PROJECT,),
                        )
                        row = await cur.fetchone()
                        assert row is not None
                        ids.append(row[0])
                        await asyncio.sleep(rng.random() * 0.005)
                    await asyncio.sleep(rng.random() * 0.02)
                    if rng.random() < 0.1:
                        raise _Rollback
                committed.update(ids)
            except _Rollback:
                rolled_back.update(ids)


class _Rollback(Exception):
    pass


async def test_many_interleaved_writers_and_a_reader_that_resumes_often(database_url: str) -> None:
    committed: set[int] = set()
    rolled_back: set[int] = set()
    delivered: list[int] = []
    done = asyncio.Event()

    async def reader() -> None:
        rng = random.Random(7)
        cursor = 0
        while True:
            finished = done.is_set()
            # A new connection now and then, and tiny pages: the cursor is all a
            # resuming reader keeps, as a client reconnecting to another replica would.
            async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
                for _ in range(rng.randint(1, 5)):
                    page = await store.fetch_after(conn, PROJECT, cursor, rng.randint(1, 7))
                    for row in page.rows:
                        assert row.id > cursor
                        delivered.append(row.id)
                    assert page.position >= cursor
                    cursor = page.position
            if finished and not page.rows and not page.held:
                return
            await asyncio.sleep(0.001)

    async with asyncio.timeout(60):
        task = asyncio.create_task(reader())
        await asyncio.gather(
            *(_writer(database_url, seed, 25, committed, rolled_back) for seed in range(16))
        )
        done.set()
        await task
    assert len(committed) > 500
    assert rolled_back
    assert len(delivered) == len(set(delivered)), "an event was delivered twice"
    assert set(delivered) == committed, "an event was skipped (or a rolled back one delivered)"
    assert delivered == sorted(delivered)


async def test_an_id_carries_its_transaction_and_its_place_in_it(database_url: str) -> None:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        async with conn.transaction():
            cur = await conn.execute(
                "INSERT INTO events (project, type) SELECT 'default', 't' "
                "FROM generate_series(1, 3) RETURNING id, xid::text::bigint"
            )
            rows = await cur.fetchall()
        assert [id >> 20 for id, _ in rows] == [xid for _, xid in rows]
        assert [id & 0xFFFFF for id, _ in rows] == [1, 2, 3]
        # The counter restarts in the next transaction.
        cur = await conn.execute(
            "INSERT INTO events (project, type) VALUES ('default', 't') RETURNING id"
        )
        row = await cur.fetchone()
        assert row is not None and row[0] & 0xFFFFF == 1


async def test_a_transaction_cannot_spill_into_the_next_ids(database_url: str) -> None:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.CheckViolation):
            async with conn.transaction():
                await conn.execute("SELECT set_config('conveyor.event_n', '1048575', true)")
                await conn.execute("INSERT INTO events (project, type) VALUES ('default', 't')")


async def test_events_held_by_an_older_writer_are_not_handed_out(database_url: str) -> None:
    async with (
        await psycopg.AsyncConnection.connect(database_url, autocommit=True) as old,
        await psycopg.AsyncConnection.connect(database_url, autocommit=True) as new,
        await psycopg.AsyncConnection.connect(database_url, autocommit=True) as reader,
    ):
        start = (await store.fetch_after(reader, PROJECT, 0, 100)).position
        await old.execute("BEGIN")
        await old.execute("SELECT pg_current_xact_id()")
        await new.execute("INSERT INTO events (project, type) VALUES ('default', 'new')")
        page = await store.fetch_after(reader, PROJECT, start, 100)
        assert page.rows == [] and page.held
        await old.execute("INSERT INTO events (project, type) VALUES ('default', 'old')")
        await old.execute("COMMIT")
        page = await store.fetch_after(reader, PROJECT, page.position, 100)
        # The older writer's event comes first though it committed second.
        assert [row.type for row in page.rows] == ["old", "new"]
        assert not page.held


async def test_each_commit_notifies_its_projects_once(database_url: str) -> None:
    async with (
        await psycopg.AsyncConnection.connect(database_url, autocommit=True) as listener,
        await psycopg.AsyncConnection.connect(database_url, autocommit=True) as writer,
    ):
        await listener.execute("LISTEN conveyor_events")
        async with writer.transaction():
            await writer.execute(
                "INSERT INTO events (project, type) "
                "SELECT 'default', 't' FROM generate_series(1, 50)"
            )
            await writer.execute("INSERT INTO events (project, type) VALUES ('default', 'u')")
        payloads = [n.payload async for n in listener.notifies(timeout=0.5)]
    assert payloads == ["default"]
