"""`conveyor migrate`: apply pending migrations and exit (the server also does it at start)."""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Sequence
from pathlib import Path

from conveyor.server.embedded_install import embedded_postgres
from conveyor.server.settings import Settings
from conveyor.server.store.migrate import migrate

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="conveyor migrate", description="Apply database migrations."
    )
    parser.add_argument(
        "--database-url", help="PostgreSQL URL; the embedded one if unset [DATABASE_URL]"
    )
    parser.add_argument(
        "--data-dir", type=Path, help="where the embedded PostgreSQL lives [CONVEYOR_DATA_DIR]"
    )
    args = parser.parse_args(argv)
    settings = Settings.from_env(os.environ, data_dir=args.data_dir, database_url=args.database_url)
    embedded = None
    url = settings.database_url
    if url is None:
        embedded = embedded_postgres(settings.data_dir)
        url = embedded.start()
    try:
        applied = asyncio.run(migrate(url, prepare=settings.database_prepare))
    finally:
        if embedded is not None:
            embedded.stop()
    print(f"applied migrations: {applied or 'none pending'}")
    return 0
