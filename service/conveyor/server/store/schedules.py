"""Schedules and their runs."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, LiteralString

from psycopg import AsyncConnection
from psycopg.errors import ForeignKeyViolation
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from conveyor.server.errors import NotFound
from conveyor.server.store import sql


@dataclass(frozen=True, slots=True)
class ScheduleRow:
    project: str
    id: str
    title: str
    description: str
    kind: str
    expression: str
    timezone: str
    task_template: dict[str, Any]
    state: str
    notes: str
    created_by: str
    overlap_policy: str
    catchup_window_ms: int
    jitter_ms: int
    dst_policy: str
    next_run_time: datetime | None
    last_run_time: datetime | None
    snooze_until: datetime | None
    snooze_reason: str
    run_count: int
    missed_count: int
    buffered_time: datetime | None
    event_cursor: int
    create_time: datetime
    update_time: datetime

    @property
    def name(self) -> str:
        return f"projects/{self.project}/schedules/{self.id}"


@dataclass(frozen=True, slots=True)
class RunRow:
    nominal_time: datetime
    fire_time: datetime
    task_id: uuid.UUID | None
    note: str
    task_state: str | None


@dataclass(frozen=True, slots=True)
class EventRef:
    id: int
    type: str
    subject: str
    task_schedule: str | None
    safe: bool


_COLUMNS = tuple(f.name for f in fields(ScheduleRow))


def _row(row: dict[str, Any]) -> ScheduleRow:
    return ScheduleRow(**{name: row[name] for name in _COLUMNS})


async def _one(
    conn: AsyncConnection[Any], query: LiteralString, params: dict[str, Any]
) -> ScheduleRow | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        row = await cur.fetchone()
    return _row(row) if row else None


async def _many(
    conn: AsyncConnection[Any], query: LiteralString, params: dict[str, Any]
) -> list[ScheduleRow]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        return [_row(r) for r in await cur.fetchall()]


def _params(row: ScheduleRow) -> dict[str, Any]:
    params = {name: getattr(row, name) for name in _COLUMNS}
    params["task_template"] = Jsonb(row.task_template)
    return params


async def insert(conn: AsyncConnection[Any], row: ScheduleRow) -> ScheduleRow | None:
    """None when the id is taken; NOT_FOUND when the project does not exist."""
    try:
        async with conn.transaction():  # a savepoint: the caller's transaction goes on
            return await _one(conn, sql.load("schedule_insert"), _params(row))
    except ForeignKeyViolation:  # schedules.project
        name = f"projects/{row.project}"
        raise NotFound(f"{name} does not exist", metadata={"resource": name}) from None


async def get(
    conn: AsyncConnection[Any], project: str, id: str, *, for_update: bool = False
) -> ScheduleRow | None:
    query = sql.load("schedule_get_for_update") if for_update else sql.load("schedule_get")
    return await _one(conn, query, {"project": project, "id": id})


async def list_page(
    conn: AsyncConnection[Any],
    *,
    project: str,
    after: str,
    limit: int,
    states: list[str],
    kinds: list[str],
    created_by: str,
    labels: dict[str, str],
) -> list[ScheduleRow]:
    return await _many(
        conn,
        sql.load("schedule_list"),
        {
            "project": project,
            "after": after,
            "limit": limit,
            "states": states,
            "kinds": kinds,
            "created_by": created_by,
            "labels": Jsonb(labels),
        },
    )


async def update(conn: AsyncConnection[Any], row: ScheduleRow, now: datetime) -> ScheduleRow:
    params = _params(row)
    params["now"] = now
    updated = await _one(conn, sql.load("schedule_update"), params)
    assert updated is not None
    return updated


async def delete(conn: AsyncConnection[Any], project: str, id: str) -> bool:
    cur = await conn.execute(sql.load("schedule_delete"), {"project": project, "id": id})
    return await cur.fetchone() is not None


async def lock_due(conn: AsyncConnection[Any], now: datetime, limit: int) -> list[ScheduleRow]:
    return await _many(conn, sql.load("schedule_due_lock"), {"now": now, "limit": limit})


async def lock_event_schedules(conn: AsyncConnection[Any], limit: int) -> list[ScheduleRow]:
    return await _many(conn, sql.load("schedule_event_lock"), {"limit": limit})


async def after_fire(
    conn: AsyncConnection[Any],
    row: ScheduleRow,
    *,
    now: datetime,
    next_run_time: datetime | None,
    last_run_time: datetime | None,
    fired: int,
    missed: int,
    buffered_time: datetime | None,
    event_cursor: int = 0,
) -> None:
    await conn.execute(
        sql.load("schedule_after_fire"),
        {
            "project": row.project,
            "id": row.id,
            "now": now,
            "next_run_time": next_run_time,
            "last_run_time": last_run_time,
            "fired": fired,
            "missed": missed,
            "buffered_time": buffered_time,
            "event_cursor": event_cursor,
        },
    )


async def set_event_cursor(conn: AsyncConnection[Any], project: str, id: str, cursor: int) -> None:
    await conn.execute(
        sql.load("schedule_set_event_cursor"),
        {"project": project, "id": id, "event_cursor": cursor},
    )


async def insert_run(
    conn: AsyncConnection[Any],
    row: ScheduleRow,
    *,
    occurrence: str,
    nominal_time: datetime,
    now: datetime,
    note: str = "",
) -> bool:
    """True when this call recorded the occurrence (it had not fired before)."""
    cur = await conn.execute(
        sql.load("schedule_run_insert"),
        {
            "project": row.project,
            "schedule_id": row.id,
            "occurrence": occurrence,
            "nominal_time": nominal_time,
            "now": now,
            "note": note,
        },
    )
    return await cur.fetchone() is not None


async def set_run_task(
    conn: AsyncConnection[Any],
    row: ScheduleRow,
    occurrence: str,
    task_id: uuid.UUID | None,
    note: str,
) -> None:
    await conn.execute(
        sql.load("schedule_run_set_task"),
        {
            "project": row.project,
            "schedule_id": row.id,
            "occurrence": occurrence,
            "task_id": task_id,
            "note": note,
        },
    )


async def recent_runs(
    conn: AsyncConnection[Any], project: str, id: str, limit: int = 10
) -> list[RunRow]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            sql.load("schedule_runs_recent"),
            {"project": project, "schedule_id": id, "limit": limit},
        )
        return [RunRow(**r) for r in await cur.fetchall()]


async def active_task(conn: AsyncConnection[Any], row: ScheduleRow) -> tuple[uuid.UUID, str] | None:
    """The newest unfinished task the schedule created: (id, state)."""
    cur = await conn.execute(
        sql.load("schedule_active_task"), {"project": row.project, "schedule": row.name}
    )
    found = await cur.fetchone()
    return (found[0], found[1]) if found else None


async def events_after(
    conn: AsyncConnection[Any], project: str, after: int, limit: int
) -> list[EventRef]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            sql.load("schedule_events_after"), {"project": project, "after": after, "limit": limit}
        )
        return [EventRef(**r) for r in await cur.fetchall()]
