"""Behind a transaction-mode PgBouncer (1.18: no prepared statement tracking).

The replica tests run through PgBouncer as well (conftest.py's `database_route`); these
check the two settings that make that work: `database_prepare` off prepares nothing on
the server, and `listen_database_url` keeps the LISTEN connection off the pooler, so
NOTIFY still wakes a replica whose pool goes through it.
"""

from __future__ import annotations

import asyncio

import psycopg
import pytest
from pgbouncer_support import PgBouncer  # type: ignore[import-not-found]

from conveyor.client import AsyncClient
from conveyor.server.app import ConveyorServer
from conveyor.server.store import leases
from conveyor.server.store.db import open_pool, prepare_at_once
from conveyor.server.wakeups.notifier import Notifier


@pytest.mark.parametrize("prepare", [True, False])
async def test_a_pool_without_prepare_prepares_nothing_on_the_server(
    database_url: str, prepare: bool
) -> None:
    pool = await open_pool(database_url, min_size=1, max_size=1, prepare=prepare)
    try:
        async with pool.connection() as conn:
            assert prepare_at_once(conn) is (True if prepare else None)
            # The lease statement (prepared at its first run by default) and a statement
            # run past psycopg's threshold of five.
            take = leases.TakeRow(worker="w", queues=["q"], limit=1, lease_ms=None)
            await leases.settle(conn, project="alpha", take=take)
            for _ in range(6):
                await conn.execute("SELECT count(*) FROM tasks WHERE project = %s", ["alpha"])
            cur = await conn.execute("SELECT count(*) FROM pg_prepared_statements")
            assert await cur.fetchone() == (2 if prepare else 0,)
            mode = await (await conn.execute("SHOW plan_cache_mode")).fetchone()
            # Off: no per-connection SET (a pooler would drop it); ALTER ROLE sets it.
            assert mode == ("force_generic_plan" if prepare else "auto",)
    finally:
        await pool.close()


def _notifier(server: ConveyorServer) -> Notifier:
    return next(loop for loop in server.context.loops if isinstance(loop, Notifier))


@pytest.mark.parametrize("database_route", ["pgbouncer"], indirect=True)
async def test_a_server_behind_pgbouncer_is_woken_by_notify_on_its_direct_listener(
    server: ConveyorServer, admin_key: str, pgbouncer: PgBouncer, database_url: str
) -> None:
    settings = server.context.settings
    assert settings.database_url == pgbouncer.url(database_url)
    assert settings.listen_database_url == database_url
    notifier = _notifier(server)
    await notifier.wait_listening()
    before = pgbouncer.transactions(database_url)
    seen = notifier.notifications

    async with AsyncClient(server.grpc_target, api_key=admin_key) as client:
        await client.create_project("alpha")
        await client.create_task("job", {"n": 1}, queue="q", project="alpha")

    # The create's NOTIFY reached the LISTEN connection (which a transaction-mode pool
    # would not deliver), and the writes went through PgBouncer.
    async with asyncio.timeout(10):
        while notifier.notifications == seen:  # noqa: ASYNC110 - the server's state, polled
            await asyncio.sleep(0.01)
    assert pgbouncer.transactions(database_url) > before
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cur = await conn.execute("SELECT count(*) FROM tasks WHERE project = 'alpha'")
        assert await cur.fetchone() == (1,)
