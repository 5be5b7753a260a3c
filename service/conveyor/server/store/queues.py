"""Queue rows with their stats, and the statements that steer a queue."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, LiteralString

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from conveyor.server.errors import NotFound
from conveyor.server.store import sql
from conveyor.server.store.wrap import wrap_exceptions

__all__ = ["QueueRow", "get", "list_page", "pause", "resume", "update"]

_LIST = sql.load("queue_list")
_PAUSE = sql.load("queue_pause")
_RESUME = sql.load("queue_resume")
_UPDATE = sql.load("queue_update")


@dataclass(frozen=True, slots=True)
class QueueRow:
    """A queue's settings and its stats as of the read."""

    project: str
    id: str
    paused: bool
    pause_reason: str
    max_concurrency: int
    rate_limit: str
    default_retry_policy: dict[str, Any]
    execution_timeout_ms: int | None
    finished_task_ttl_ms: int | None  # None: the server default; 0: kept forever
    redact_paths: list[str]  # JSON Pointers or bare keys (domain/redaction.py)
    max_log_bytes: int | None  # None: the server default (domain/task_log_bounds.py)
    max_log_lines: int | None
    create_time: datetime
    update_time: datetime
    queued: int
    scheduled: int
    running: int
    awaiting_approval: int
    oldest_queued_age: timedelta | None
    succeeded_last_hour: int
    failed_last_hour: int

    @property
    def name(self) -> str:
        return f"projects/{self.project}/queues/{self.id}"


async def list_page(
    conn: AsyncConnection[Any], project: str, *, after: str, limit: int
) -> list[QueueRow]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_LIST, {"project": project, "after": after, "limit": limit, "only": None})
        return [QueueRow(**r) for r in await cur.fetchall()]


async def get(conn: AsyncConnection[Any], project: str, id: str) -> QueueRow | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_LIST, {"project": project, "after": "", "limit": 1, "only": id})
        row = await cur.fetchone()
    return QueueRow(**row) if row else None


async def pause(conn: AsyncConnection[Any], project: str, id: str, *, reason: str) -> bool | None:
    """Pauses the queue (creating it if needed); whether it was not paused before, or
    None when the project does not exist."""
    return await _changed(conn, _PAUSE, {"project": project, "id": id, "reason": reason})


async def resume(conn: AsyncConnection[Any], project: str, id: str) -> bool | None:
    """Resumes the queue (creating it if needed); whether it was paused before, or None
    when the project does not exist."""
    return await _changed(conn, _RESUME, {"project": project, "id": id})


async def _changed(
    conn: AsyncConnection[Any], statement: LiteralString, params: dict[str, Any]
) -> bool | None:
    try:
        with wrap_exceptions(params["project"]):
            async with conn.cursor() as cur:
                await cur.execute(statement, params)
                row = await cur.fetchone()
    except NotFound:
        return None  # creating a queue of a project that does not exist
    return bool(row and row[0])


async def update(
    conn: AsyncConnection[Any],
    project: str,
    id: str,
    *,
    max_concurrency: int | None,
    rate_limit: str | None,
    default_retry_policy: dict[str, Any] | None,
    execution_timeout_ms: int | None = None,
    set_finished_task_ttl: bool = False,
    finished_task_ttl_ms: int | None = None,
    redact_paths: list[str] | None = None,
    max_log_bytes: int | None = None,
    max_log_lines: int | None = None,
) -> bool:
    """Sets the settings that are not None (creating the queue if needed); False when the
    project does not exist. An execution_timeout_ms of 0 clears it (no limit). The
    finished_task_ttl_ms is set when set_finished_task_ttl, None meaning the default; a
    max_log_bytes or max_log_lines of 0 restores the default."""
    return (
        await _changed(
            conn,
            _UPDATE,
            {
                "project": project,
                "id": id,
                "set_max_concurrency": max_concurrency is not None,
                "max_concurrency": max_concurrency or 0,
                "set_rate_limit": rate_limit is not None,
                "rate_limit": rate_limit or "",
                "set_default_retry_policy": default_retry_policy is not None,
                "default_retry_policy": Jsonb(default_retry_policy or {}),
                "set_execution_timeout": execution_timeout_ms is not None,
                "execution_timeout_ms": execution_timeout_ms or None,
                "set_finished_task_ttl": set_finished_task_ttl,
                "finished_task_ttl_ms": finished_task_ttl_ms,
                "set_redact_paths": redact_paths is not None,
                "redact_paths": redact_paths or [],
                "set_max_log_bytes": max_log_bytes is not None,
                "max_log_bytes": max_log_bytes or None,
                "set_max_log_lines": max_log_lines is not None,
                "max_log_lines": max_log_lines or None,
            },
        )
        is not None
    )
