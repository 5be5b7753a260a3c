"""Values PostgreSQL cannot store, as a domain error.

Text and jsonb hold no NUL character (U+0000). The domain refuses it field by field
where it checks text (validate.NUL_RULE, task input); free-form JSON that reaches a
statement elsewhere (a Struct of progress, event data, a result) is refused here, at
the RPC boundary, as INVALID_ARGUMENT instead of INTERNAL.
"""

from __future__ import annotations

import psycopg
from psycopg import errors as pg_errors

from conveyor.server import errors

__all__ = ["invalid_from"]


def invalid_from(error: BaseException) -> errors.InvalidArgument | None:
    """INVALID_ARGUMENT for a value the database cannot store, or None."""
    nul = isinstance(error, pg_errors.UntranslatableCharacter) or (
        isinstance(error, psycopg.DataError) and "NUL" in str(error)
    )
    if not nul:
        return None
    return errors.InvalidArgument.of(
        "request", "holds a NUL character (\\u0000), which cannot be stored"
    )
