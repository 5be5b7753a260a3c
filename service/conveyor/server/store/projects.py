"""Projects and their webhook secrets."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from conveyor.server.store import sql

_INSERT = sql.load("project_insert")
_GET = sql.load("project_get")
_LIST = sql.load("project_list")
_UPDATE = sql.load("project_update")
_LOCK = sql.load("project_lock")
_SECRET_GET = sql.load("webhook_secret_get")
_SECRET_ROTATE = sql.load("webhook_secret_rotate")


@dataclass(frozen=True)
class ProjectRow:
    id: str
    display_name: str
    callback_url: str
    labels: dict[str, str]
    create_time: datetime
    update_time: datetime
    finished_task_ttl_ms: int | None = None  # None: the server default; 0: kept forever
    redact_paths: tuple[str, ...] = ()  # JSON Pointers or bare keys (domain/redaction.py)
    webhook_full_input: bool = False
    rate_limits: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SecretRow:
    webhook_secret: str
    previous_webhook_secret: str | None
    previous_secret_expire_time: datetime | None


def _row(row: dict[str, Any]) -> ProjectRow:
    return ProjectRow(**{**row, "redact_paths": tuple(row["redact_paths"])})


async def insert(
    conn: AsyncConnection[Any],
    *,
    id: str,
    display_name: str,
    callback_url: str,
    labels: dict[str, str],
    webhook_secret: str,
) -> ProjectRow | None:
    """Inserts a project; None when the id is taken."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            _INSERT,
            {
                "id": id,
                "display_name": display_name,
                "callback_url": callback_url,
                "labels": Jsonb(labels),
                "webhook_secret": webhook_secret,
            },
        )
        row = await cur.fetchone()
    return _row(row) if row else None


async def get(conn: AsyncConnection[Any], id: str) -> ProjectRow | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_GET, {"id": id})
        row = await cur.fetchone()
    return _row(row) if row else None


async def list_page(
    conn: AsyncConnection[Any], *, after: str, limit: int, only: str | None
) -> list[ProjectRow]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_LIST, {"after": after, "limit": limit, "only": only})
        return [_row(r) for r in await cur.fetchall()]


async def update(
    conn: AsyncConnection[Any],
    id: str,
    *,
    display_name: str | None,
    callback_url: str | None,
    labels: dict[str, str] | None,
    set_finished_task_ttl: bool = False,
    finished_task_ttl_ms: int | None = None,
    redact_paths: list[str] | None = None,
    webhook_full_input: bool | None = None,
    rate_limits: dict[str, Any] | None = None,
) -> ProjectRow | None:
    """Sets the fields that are not None (finished_task_ttl_ms when set_finished_task_ttl,
    None meaning the default); None when the project does not exist."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            _UPDATE,
            {
                "id": id,
                "set_display_name": display_name is not None,
                "display_name": display_name or "",
                "set_callback_url": callback_url is not None,
                "callback_url": callback_url or "",
                "set_labels": labels is not None,
                "labels": Jsonb(labels or {}),
                "set_finished_task_ttl": set_finished_task_ttl,
                "finished_task_ttl_ms": finished_task_ttl_ms,
                "set_redact_paths": redact_paths is not None,
                "redact_paths": redact_paths or [],
                "set_webhook_full_input": webhook_full_input is not None,
                "webhook_full_input": bool(webhook_full_input),
                "set_rate_limits": rate_limits is not None,
                "rate_limits": Jsonb(rate_limits or {}),
            },
        )
        row = await cur.fetchone()
    return _row(row) if row else None


async def lock(conn: AsyncConnection[Any], id: str) -> dict[str, Any] | None:
    """Locks the project's row until the transaction ends; returns its rate_limits, or
    None when it does not exist."""
    cur = await conn.execute(_LOCK, {"id": id})
    row = await cur.fetchone()
    return dict(row[0]) if row is not None else None


async def get_secret(conn: AsyncConnection[Any], id: str) -> SecretRow | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_SECRET_GET, {"id": id})
        row = await cur.fetchone()
    return SecretRow(**row) if row else None


async def rotate_secret(
    conn: AsyncConnection[Any], id: str, *, secret: str, grace: timedelta
) -> SecretRow | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_SECRET_ROTATE, {"id": id, "secret": secret, "grace": grace})
        row = await cur.fetchone()
    return SecretRow(**row) if row else None
