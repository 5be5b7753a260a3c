"""psycopg errors mapped to domain errors, in one place (procrastinate's
`wrap_exceptions` is the model): the store's callers see conveyor.server.errors only.

Connection loss (the database is unreachable) is told apart in store/outage.py, and
the batcher sorts the errors it may retry in store/task_batcher.py; every constraint
that answers a caller's request is mapped here.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from psycopg.errors import ForeignKeyViolation

from conveyor.server.errors import NotFound

__all__ = ["wrap_exceptions"]


@contextmanager
def wrap_exceptions(project: str) -> Iterator[None]:
    """Runs statements that write rows of `project`.

    A row's foreign key to projects failing means the project does not exist: NotFound
    naming it (the transaction is then aborted, as it would be anyway). Any other
    violation propagates unchanged.
    """
    try:
        yield
    except ForeignKeyViolation as error:
        if not (error.diag.constraint_name or "").endswith("_project_fkey"):
            raise
        resource = f"projects/{project}"
        raise NotFound(f"{resource} does not exist", metadata={"resource": resource}) from None
