"""schema.sql equals the migrations, and migrating is safe to race."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg.rows import TupleRow

from conveyor.server.store import sql
from conveyor.server.store.migrate import MIGRATION_LOCK_KEY, list_migrations, migrate

DatabaseFactory = Callable[..., str]  # the database_factory fixture (see conftest.py)

# What "the same schema" means: everything in the public schema a query or a constraint
# can observe, in a form that does not depend on how it was created. migrate.py's own
# bookkeeping table is left out (schema.sql does not create it).
_CATALOG: dict[str, str] = {
    "relations": """
        SELECT c.relname, c.relkind, c.relpersistence
        FROM pg_class c
        WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r','p','v','m','S','f')
          AND c.relname NOT LIKE 'schema_migrations%'
        ORDER BY 1""",
    "columns": """
        SELECT c.relname,
               row_number() OVER (PARTITION BY c.oid ORDER BY a.attnum),
               a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
               pg_get_expr(d.adbin, d.adrelid), a.attidentity, a.attgenerated,
               co.collname
        FROM pg_attribute a
        JOIN pg_class c ON c.oid = a.attrelid
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        LEFT JOIN pg_collation co ON co.oid = a.attcollation
        WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r','p','v','m','f')
          AND a.attnum > 0 AND NOT a.attisdropped AND c.relname <> 'schema_migrations'
        ORDER BY 1, 2""",
    "constraints": """
        SELECT conrelid::regclass::text, conname, contype, pg_get_constraintdef(oid)
        FROM pg_constraint
        WHERE connamespace = 'public'::regnamespace
          AND conrelid::regclass::text <> 'schema_migrations'
        ORDER BY 1, 2""",
    "indexes": """
        SELECT tablename, indexname, indexdef FROM pg_indexes
        WHERE schemaname = 'public' AND tablename <> 'schema_migrations'
        ORDER BY 1, 2""",
    "functions": """
        SELECT proname, pg_get_function_identity_arguments(oid), pg_get_functiondef(oid)
        FROM pg_proc
        WHERE pronamespace = 'public'::regnamespace AND prokind IN ('f', 'p')
        ORDER BY 1, 2""",
    "triggers": """
        SELECT tgrelid::regclass::text, tgname, pg_get_triggerdef(oid)
        FROM pg_trigger
        WHERE NOT tgisinternal
          AND tgrelid IN (SELECT oid FROM pg_class WHERE relnamespace = 'public'::regnamespace)
        ORDER BY 1, 2""",
    "types": """
        SELECT t.typname, t.typtype, format_type(t.typbasetype, t.typtypmod),
               array(SELECT enumlabel FROM pg_enum WHERE enumtypid = t.oid
                     ORDER BY enumsortorder)
        FROM pg_type t
        WHERE t.typnamespace = 'public'::regnamespace AND t.typtype IN ('e', 'd')
        ORDER BY 1""",
    "views": """
        SELECT viewname, definition FROM pg_views WHERE schemaname = 'public' ORDER BY 1""",
    "extensions": "SELECT extname FROM pg_extension ORDER BY 1",
    # Seeded rows: which projects exist from the start (secrets are random, so not those).
    "seeded_projects": "SELECT id, display_name FROM projects ORDER BY id",
}


async def _catalog(url: str) -> dict[str, list[tuple[Any, ...]]]:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        return {
            name: await (await conn.execute(query)).fetchall() for name, query in _CATALOG.items()
        }


async def _apply_schema_sql(url: str) -> None:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute(sql.load_package_file("schema.sql"))


async def test_schema_sql_matches_migrations(database_factory: DatabaseFactory) -> None:
    from_schema, from_migrations = database_factory(), database_factory()
    await _apply_schema_sql(from_schema)
    await migrate(from_migrations)

    expected, actual = await _catalog(from_migrations), await _catalog(from_schema)

    assert expected["relations"], "the migrations created no tables?"
    for part in _CATALOG:
        assert actual[part] == expected[part], f"schema.sql differs from migrations in {part}"


def test_migrations_are_numbered_from_one_in_order() -> None:
    # Numbers are reserved per line of work (DESIGN: one number per engineer), so a later
    # number may land before an earlier one: a gap is allowed, a repeat never is.
    # migrate() applies whatever is not applied yet, whatever its number.
    versions = [m.version for m in list_migrations()]
    assert versions[0] == 1
    assert versions == sorted(set(versions))


async def test_migrate_applies_each_version_once(database_factory: DatabaseFactory) -> None:
    url = database_factory()
    everything = [m.version for m in list_migrations()]

    assert await migrate(url) == everything
    assert await migrate(url) == []


async def _advisory_waiters(conn: psycopg.AsyncConnection[TupleRow]) -> int:
    cursor = await conn.execute(
        "SELECT count(*) FROM pg_locks"
        " WHERE locktype = 'advisory' AND NOT granted AND database ="
        " (SELECT oid FROM pg_database WHERE datname = current_database())"
    )
    row = await cursor.fetchone()
    assert row is not None
    return int(row[0])


async def test_concurrent_migrations_on_an_empty_database_apply_once(
    database_factory: DatabaseFactory,
) -> None:
    url = database_factory()
    everything = [m.version for m in list_migrations()]

    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as holder:
        # Hold the migration lock so both migrators are provably inside migrate(), queued
        # on the lock, before either can create anything. If migrate() touched
        # schema_migrations before taking the lock, the second would queue behind the
        # first's CREATE TABLE instead and we would never see two lock waiters.
        async with holder.transaction():
            await holder.execute(sql.load("migrations_lock"), {"key": MIGRATION_LOCK_KEY})
            racers = [asyncio.create_task(migrate(url)) for _ in range(2)]
            deadline = time.monotonic() + 10
            while await _advisory_waiters(holder) < 2:
                assert time.monotonic() < deadline, "migrators did not both queue on the lock"
                assert not any(r.done() for r in racers), "a migrator ran without the lock"
                await asyncio.sleep(0.02)
        results = await asyncio.wait_for(asyncio.gather(*racers), timeout=30)

        cursor = await holder.execute("SELECT version FROM schema_migrations ORDER BY version")
        recorded = [version for (version,) in await cursor.fetchall()]

    assert sorted(results) == [[], everything]
    assert recorded == everything
