"""Numbered plain-SQL migrations, safe to run from N replicas starting at once.

`migrations/NNNN_name.sql` files are applied in version order, all pending ones in one
transaction that first takes a transaction-scoped advisory lock. A second migrator on the
same database blocks on that lock, and once the first commits it finds nothing left to
do. Applied versions are recorded in `schema_migrations`. The lock is per database, so
test databases migrate in parallel.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from typing import Any, LiteralString

import psycopg
from psycopg.rows import TupleRow

from conveyor.server.logging import get_logger
from conveyor.server.store import sql

__all__ = ["MIGRATION_LOCK_KEY", "Migration", "list_migrations", "migrate"]

MIGRATION_LOCK_KEY = int.from_bytes(b"conveyor", "big")
"""The advisory lock key: the bytes of "conveyor" as a (positive) bigint, unlikely to
collide with another application's key on a shared database."""

_FILE_NAME = re.compile(r"(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql")

_log = get_logger(__name__)


@dataclass(frozen=True)
class Migration:
    """One migration file."""

    version: int
    name: str
    sql: LiteralString


def list_migrations() -> list[Migration]:
    """Every migration shipped with this build, in the order they apply.

    Raises ValueError for a misnamed file or a version used twice, so a bad file fails
    every test run rather than one deployment.
    """
    migrations: dict[int, Migration] = {}
    directory = resources.files("conveyor.server.store").joinpath("migrations")
    for entry in directory.iterdir():
        if not entry.name.endswith(".sql"):
            continue
        match = _FILE_NAME.fullmatch(entry.name)
        if match is None:
            raise ValueError(f"migration file {entry.name!r} must be named NNNN_snake_name.sql")
        version = int(match["version"])
        if version in migrations:
            raise ValueError(f"migration version {version} is used twice")
        text = sql.load_package_file("migrations", entry.name)
        migrations[version] = Migration(version, match["name"], text)
    return [migrations[version] for version in sorted(migrations)]


async def migrate(url: str, *, prepare: bool = True) -> list[int]:
    """Bring the database at `url` up to date; return the versions this call applied.

    All-or-nothing: if a migration fails, none of this call's migrations stay applied.
    `prepare=False` (behind a pooler that cannot track prepared statements) keeps the
    statements that repeat, one per migration, from being prepared on the server.
    """
    unprepared: dict[str, Any] = {} if prepare else {"prepare_threshold": None}
    async with await psycopg.AsyncConnection.connect(url, autocommit=True, **unprepared) as conn:
        return await _apply_pending(conn, list_migrations())


async def _apply_pending(
    conn: psycopg.AsyncConnection[TupleRow], migrations: list[Migration]
) -> list[int]:
    async with conn.transaction():
        await conn.execute(sql.load("migrations_lock"), {"key": MIGRATION_LOCK_KEY})
        await conn.execute(sql.load("migrations_table_create"))
        cursor = await conn.execute(sql.load("migrations_applied"))
        applied = {version for (version,) in await cursor.fetchall()}

        known = {m.version for m in migrations}
        if unknown := sorted(applied - known):
            # A newer build migrated this database (e.g. mid rolling deploy). Migrations
            # are written to keep the previous build working, so carry on.
            _log.warning("database has migrations this build does not know", versions=unknown)

        done: list[int] = []
        for migration in migrations:
            if migration.version in applied:
                continue
            # No parameters: psycopg sends the file as a simple query, which may hold
            # many statements.
            await conn.execute(migration.sql)
            await conn.execute(
                sql.load("migrations_record"),
                {"version": migration.version, "name": migration.name},
            )
            done.append(migration.version)
    if done:
        _log.info("migrations applied", versions=done)
    return done
