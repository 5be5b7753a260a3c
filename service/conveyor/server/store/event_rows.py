"""Reading the event log in cursor order, publishing to it, and pruning it.

Cursor order is the order of event ids, and an id carries its writer's transaction id
in its high bits (0004_events.sql). A read returns only events below the *bound*: ids of
transactions that have all ended, so nothing can still appear below it. A reader that
saw every event below the bound may take bound - 1 as its position, which is how
watchers on every replica agree on where they are without talking to each other.
"""

from __future__ import annotations

import json
import types
import typing
import uuid
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from conveyor.server.store import sql
from conveyor.server.store.db import Pool
from conveyor.server.store.task_rows import TaskRow
from conveyor.server.store.wrap import wrap_exceptions

__all__ = [
    "EventRow",
    "Page",
    "fetch_after",
    "live_position",
    "prune",
    "publish",
    "task_from_snapshot",
]

_AFTER = sql.load("event_after")
_HORIZON = sql.load("event_horizon")
_PUBLISH = sql.load("event_publish")
_GET = sql.load("event_get")
_PRUNE = sql.load("event_prune")


class EventRow:
    """One event as read from the table. The task snapshot and data stay JSON text until
    someone needs them: a watcher whose filter looks at the type alone never parses them."""

    __slots__ = (
        "_data",
        "_task",
        "data_json",
        "id",
        "message",
        "project",
        "subject",
        "task_json",
        "time",
        "type",
    )

    def __init__(
        self,
        project: str,
        id: int,
        type: str,
        time: datetime,
        subject: str,
        task_json: str | None,
        data_json: str | None,
    ) -> None:
        self.project = project
        self.id = id
        self.type = type
        self.time = time
        self.subject = subject
        self.task_json = task_json
        self.data_json = data_json
        self._task: dict[str, Any] | None = None
        self._data: dict[str, Any] | None = None
        self.message: Any = None
        """The rendered form (the RPC layer's Event), built once for every stream that
        sends this row."""

    @property
    def task(self) -> dict[str, Any] | None:
        """The task snapshot (to_jsonb of the row), or None for events without one."""
        if self._task is None and self.task_json is not None:
            self._task = json.loads(self.task_json)
        return self._task

    @property
    def data(self) -> dict[str, Any]:
        if self._data is None:
            parsed = json.loads(self.data_json) if self.data_json else {}
            self._data = parsed if isinstance(parsed, dict) else {"value": parsed}
        return self._data

    def __repr__(self) -> str:
        return f"EventRow({self.project!r}, {self.id}, {self.type!r})"


@dataclass(frozen=True)
class Page:
    """What one read returned: final events in id order, and how far it got."""

    rows: list[EventRow]
    position: int
    """Everything up to here has been read: the last row's id when the read was cut by
    its limit, else bound - 1 (every id below the bound is final)."""
    held: bool
    """Committed events wait at or above the bound for an older writer to end."""


async def fetch_after(conn: AsyncConnection[Any], project: str, after: int, limit: int) -> Page:
    """Up to `limit` final events of `project` with ids above `after`."""
    cur = await conn.execute(_AFTER, {"project": project, "after": after, "limit": limit})
    rows: list[EventRow] = []
    bound = after + 1
    held = False
    for record in await cur.fetchall():
        bound, held = int(record[0]), bool(record[1])
        if record[2] is not None:
            rows.append(EventRow(project, *record[2:]))
    position = rows[-1].id if len(rows) >= limit else max(after, bound - 1)
    return Page(rows, position, held)


async def live_position(pool: Pool) -> int:
    """Where a watcher that wants only new events starts: every id up to it is final."""
    async with pool.connection() as conn:
        cur = await conn.execute(_HORIZON)
        row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def publish(
    conn: AsyncConnection[Any], *, project: str, type: str, subject: str, data: dict[str, Any]
) -> EventRow:
    with wrap_exceptions(project):
        cur = await conn.execute(
            _PUBLISH, {"project": project, "type": type, "subject": subject, "data": Jsonb(data)}
        )
    record = await cur.fetchone()
    assert record is not None
    return EventRow(project, *record)


async def get(conn: AsyncConnection[Any], project: str, id: int) -> EventRow | None:
    cur = await conn.execute(_GET, {"project": project, "id": id})
    record = await cur.fetchone()
    return EventRow(project, *record) if record is not None else None


async def prune(conn: AsyncConnection[Any], cutoff: datetime, limit: int) -> int:
    """Deletes up to `limit` events older than `cutoff`; returns how many."""
    cur = await conn.execute(_PRUNE, {"cutoff": cutoff, "limit": limit})
    return cur.rowcount


# Task snapshots are to_jsonb of a tasks row: uuids and timestamps arrive as strings, and
# snapshots written before a column existed lack it. Fields are sorted once by what
# they need, so converting a snapshot (once per event, on the streaming path) is a
# dict comprehension and two short loops.
def _fields() -> tuple[dict[str, Any], tuple[str, ...], tuple[str, ...]]:
    hints = typing.get_type_hints(TaskRow)
    defaults: dict[str, Any] = {}
    uuids: list[str] = []
    times: list[str] = []
    for f in fields(TaskRow):
        hint = hints[f.name]
        union = typing.get_origin(hint) in (typing.Union, types.UnionType)
        args = set(typing.get_args(hint)) if union else {hint}
        optional = type(None) in args
        args.discard(type(None))
        base = next(iter(args)) if len(args) == 1 else Any
        if base is uuid.UUID:
            uuids.append(f.name)
        elif base is datetime:
            times.append(f.name)
        default: Any = None
        if not optional:
            if base is datetime:
                default = _EPOCH
            elif base is dict or typing.get_origin(base) is dict:
                default = {}
            else:
                default = {str: "", int: 0, bool: False}.get(base)
        defaults[f.name] = default
    return defaults, tuple(uuids), tuple(times)


_EPOCH = datetime.fromisoformat("1970-01-01T00:00:00+00:00")
_DEFAULTS, _UUIDS, _TIMES = _fields()
_NIL = str(uuid.UUID(int=0))


def task_from_snapshot(data: dict[str, Any]) -> TaskRow:
    """The TaskRow of an event's task snapshot."""
    values = {name: data.get(name, default) for name, default in _DEFAULTS.items()}
    values["id"] = values["id"] or _NIL
    values["root_task"] = values["root_task"] or values["id"]
    for name in _UUIDS:
        raw = values[name]
        if raw is not None:
            values[name] = uuid.UUID(raw)
    for name in _TIMES:
        raw = values[name]
        if isinstance(raw, str):
            values[name] = datetime.fromisoformat(raw)
    for name, default in _DEFAULTS.items():
        if values[name] is None and default is not None:
            values[name] = default
    return TaskRow(**values)
