"""`conveyor admin-key reset`: replace a lost bootstrap admin key, with database access.

A lost admin.key locked everyone out: no RPC can mint a system key without one. This
command talks to the database directly (`--database-url`, or the embedded PostgreSQL
of `--data-dir`), revokes every system key, writes a new one to <data-dir>/admin.key
(mode 0600) and records it in the `default` project's audit chain. It may run while
the server that owns the data dir is up; other replicas stop accepting the old key
within their auth cache's lifetime (5 s).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from conveyor.server.domain.keys import reset_bootstrap_key
from conveyor.server.embedded_install import embedded_postgres
from conveyor.server.settings import Settings
from conveyor.server.store import server_secrets
from conveyor.server.store.db import open_pool
from conveyor.server.store.migrate import migrate

__all__ = ["main"]


async def _reset(
    database_url: str, data_dir: Path, *, prepare: bool = True
) -> tuple[str, list[str]]:
    await migrate(database_url, prepare=prepare)
    pool = await open_pool(database_url, min_size=1, max_size=2, prepare=prepare)
    try:
        server_key = await server_secrets.get_or_create(pool, server_secrets.SERVER_KEY)
        return await reset_bootstrap_key(pool, data_dir, server_key)
    finally:
        await pool.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="conveyor admin-key", description="Manage the bootstrap admin key."
    )
    actions = parser.add_subparsers(dest="action", required=True)
    reset = actions.add_parser(
        "reset",
        help="revoke the bootstrap admin key and write a new one",
        description="Revoke every system admin key and write a new one to "
        "<data-dir>/admin.key (audited). Needs direct access to the database.",
    )
    reset.add_argument(
        "--database-url", help="PostgreSQL URL; the data dir's embedded one if unset [DATABASE_URL]"
    )
    reset.add_argument(
        "--data-dir", type=Path, help="where admin.key is written [CONVEYOR_DATA_DIR]"
    )
    args = parser.parse_args(argv)
    settings = Settings.from_env(os.environ, data_dir=args.data_dir, database_url=args.database_url)
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    embedded = None
    url = settings.database_url
    if url is None:
        embedded = embedded_postgres(settings.data_dir)
        url = embedded.start()
    try:
        name, revoked = asyncio.run(
            _reset(url, settings.data_dir, prepare=settings.database_prepare)
        )
    finally:
        if embedded is not None:
            embedded.stop()
    path = settings.data_dir / "admin.key"
    print(f"revoked {', '.join(revoked) or 'no key'}", file=sys.stderr)
    print(f"wrote the new admin key {name} to {path}", file=sys.stderr)
    return 0
