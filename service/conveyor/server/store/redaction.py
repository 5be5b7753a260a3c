"""The redaction settings of a project and its queues, read together."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from conveyor.server.store import sql

__all__ = ["RuleRow", "rule"]

_RULE = sql.load("redaction_rule")


@dataclass(frozen=True)
class RuleRow:
    project_paths: list[str]
    webhook_full_input: bool
    queue_paths: dict[str, list[str]]


async def rule(conn: AsyncConnection[Any], project: str) -> RuleRow | None:
    """The project's redact_paths, webhook choice and its queues' redact_paths (only the
    queues that set some); None when the project does not exist."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_RULE, {"project": project})
        row = await cur.fetchone()
    return RuleRow(**row) if row else None
