"""The pool's sessions run in UTC, whatever the database's own TimeZone.

psycopg then hands timestamptz values out with `timezone.utc` (no per-value conversion
to a ZoneInfo); the instants are the same, and so is what the API renders of them.
"""

from __future__ import annotations

from datetime import UTC

import psycopg
from psycopg import sql

from conveyor.server.domain.leases import Leases, Take
from conveyor.server.render.tasks import task_message
from conveyor.server.store.db import open_pool


async def test_a_database_in_another_zone_reads_and_renders_the_same_instants(
    database_url: str,
) -> None:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as admin:
        name = admin.info.dbname
        await admin.execute(
            sql.SQL("ALTER DATABASE {} SET TimeZone = 'America/New_York'").format(
                sql.Identifier(name)
            )
        )
        await admin.execute(
            "INSERT INTO tasks (project, id, queue, kind, input, state, root_task)"
            " SELECT 'default', id, 'tz', 'k', '{}', 'QUEUED', id"
            " FROM (SELECT gen_random_uuid() AS id) AS g"
        )
    pool = await open_pool(database_url, min_size=1, max_size=1)
    try:
        (row,) = await Leases(pool).take("default", Take("w", ("tz",), 1))
        async with pool.connection() as conn:
            zone = await (await conn.execute("SHOW TimeZone")).fetchone()
    finally:
        await pool.close()
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as other:
        assert await (await other.execute("SHOW TimeZone")).fetchone() == ("America/New_York",)
        stored = await (
            await other.execute(
                "SELECT create_time, start_time, lease_expire_time FROM tasks WHERE id = %s",
                [row.id],
            )
        ).fetchone()
    assert zone == ("UTC",)
    assert row.start_time is not None and row.start_time.tzinfo is UTC
    assert stored is not None and stored[1].utcoffset() != row.start_time.utcoffset()
    assert (row.create_time, row.start_time, row.lease_expire_time) == stored
    task = task_message(row)
    assert task.start_time.ToDatetime(tzinfo=UTC) == stored[1]
    assert task.create_time.ToDatetime(tzinfo=UTC) == stored[0]
