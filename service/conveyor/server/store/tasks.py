"""Reading tasks and the guarded updates of CancelTask. (Creating them: task_inserts.)"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Literal

from psycopg import AsyncConnection
from psycopg import sql as pgsql
from psycopg.rows import dict_row

from conveyor.server.store import sql
from conveyor.server.store.task_rows import (
    TASK_COLUMNS,
    AttemptRow,
    JsonbLoader,
    TaskRow,
    task_row,
)

__all__ = [
    "Order",
    "TaskQuery",
    "TaskView",
    "cancel",
    "count_matching",
    "delete_matching",
    "delete_named",
    "get",
    "get_row",
    "list_page",
    "page_slices",
    "request_cancel",
    "tree",
]

_BLOCKED = sql.load_blocks("task_blocked")
_GET = pgsql.SQL(sql.load("task_get")).format(blocked_reason=pgsql.SQL(_BLOCKED["reason"]))
_GET_ROW = sql.load("task_get_row")
_CANCEL = sql.load("task_cancel")
_REQUEST_CANCEL = sql.load("task_request_cancel")
_LIST = sql.load_blocks("task_list")
_ALL = pgsql.SQL("t.*")
# A page's columns: a TaskRow's, in its order (so a row is TaskRow(*row[:n]), no dict or
# name lookup), then the blocked reason. BASIC reads NULL for the three large JSON columns
# rather than decoding what it will not show.
_BASIC_NULLS = frozenset({"input", "result", "progress"})


def _page_columns(basic: bool) -> pgsql.SQL:
    # Plain SQL text, made once: TaskRow's field names are fixed names of this source
    # (lower-case, no quoting needed), and composing fifty Identifiers cost ~0.2 ms a page.
    columns = [
        f"NULL::jsonb AS {name}" if basic and name in _BASIC_NULLS else f"t.{name}"
        for name in TASK_COLUMNS
    ]
    text = ", ".join([*columns, _BLOCKED["reason"] + " AS blocked_reason"])
    return pgsql.SQL(text)  # mypy reads LiteralString as str: no cast needed


_PAGE_COLUMNS = {basic: _page_columns(basic) for basic in (False, True)}
_TREE = sql.load("task_tree")
_DELETE = sql.load_blocks("task_delete")

Order = Literal["id", "id_desc", "priority", "priority_desc"]


@dataclass(frozen=True)
class TaskView:
    """A task as GetTask shows it."""

    row: TaskRow
    attempts: list[AttemptRow]
    blocked_reason: str | None


@dataclass(frozen=True)
class TaskQuery:
    """A parsed ListTasks request. Empty sequences and None mean "no condition"."""

    project: str
    limit: int
    order: Order = "id"
    states: Sequence[str] = ()
    priorities: Sequence[int] = ()
    kinds: Sequence[str] = ()
    queues: Sequence[str] = ()
    workers: Sequence[str] = ()
    correlation_id: str | None = None
    creators: Sequence[str] = ()  # "me" already resolved to the calling key's name
    root_task: uuid.UUID | None = None
    labels: dict[str, str] = field(default_factory=dict)
    search: str | None = None  # an ILIKE pattern
    create_time_after: datetime | None = None
    id_floor: uuid.UUID | None = None
    create_time_before: datetime | None = None
    id_ceiling: uuid.UUID | None = None
    after_id: uuid.UUID | None = None  # the keyset position: the last row seen
    after_priority: int | None = None


def _attempt(data: dict[str, Any]) -> AttemptRow:
    end = data["end_time"]
    return AttemptRow(
        project=data["project"],
        task_id=uuid.UUID(data["task_id"]),
        attempt=data["attempt"],
        worker=data["worker"],
        lease_id=uuid.UUID(data["lease_id"]),
        start_time=datetime.fromisoformat(data["start_time"]),
        end_time=datetime.fromisoformat(end) if end else None,
        outcome=data["outcome"],
        error=data["error"],
        progress=data["progress"],
    )


async def get(
    conn: AsyncConnection[Any], project: str, id: uuid.UUID, *, worker_seen_within: timedelta
) -> TaskView | None:
    """The task with its attempts and blocked reason, in one statement; None if missing."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            _GET, {"project": project, "id": id, "worker_seen_within": worker_seen_within}
        )
        row = await cur.fetchone()
    if row is None:
        return None
    attempts = [_attempt(a) for a in row["attempts_json"]]
    return TaskView(task_row(row), attempts, row["blocked_reason"])


async def get_row(conn: AsyncConnection[Any], project: str, id: uuid.UUID) -> TaskRow | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_GET_ROW, {"project": project, "id": id})
        row = await cur.fetchone()
    return task_row(row) if row else None


def _compose(
    query: TaskQuery, columns: pgsql.Composable = _ALL, join: str = ""
) -> tuple[pgsql.Composed, dict[str, Any]]:
    params: dict[str, Any] = {"project": query.project, "limit": query.limit}
    blocks: list[str] = []

    def use(block: str, **values: Any) -> None:
        blocks.append(block)
        params.update(values)

    if query.states:
        use("states", states=list(query.states))
    if query.priorities:
        use("priorities", priorities=list(query.priorities))
    if query.kinds:
        use("kinds", kinds=list(query.kinds))
    if query.queues:
        use("queues", queues=list(query.queues))
    if query.workers:
        use("workers", workers=list(query.workers))
    if query.correlation_id is not None:
        use("correlation_id", correlation_id=query.correlation_id)
    if query.creators:
        use("creators", creators=list(query.creators))
    if query.root_task is not None:
        use("root_task", root_task=query.root_task)
    if query.labels:
        use("labels", labels=json.dumps(query.labels))
    if query.search is not None:
        use("search", search=query.search)
    if query.create_time_after is not None:
        use("create_time_after", create_time_after=query.create_time_after, id_floor=query.id_floor)
    if query.create_time_before is not None:
        use(
            "create_time_before",
            create_time_before=query.create_time_before,
            id_ceiling=query.id_ceiling,
        )
    if query.after_id is not None:
        if query.order in ("priority", "priority_desc"):
            use(
                f"after_{query.order}", after_id=query.after_id, after_priority=query.after_priority
            )
        else:
            use("after_id" if query.order == "id" else "after_id_desc", after_id=query.after_id)
    statement = pgsql.SQL(_LIST["select"]).format(
        columns=columns,
        join=pgsql.SQL(join),
        filters=pgsql.SQL("\n").join(pgsql.SQL(_LIST[b]) for b in blocks),
        order=pgsql.SQL(_LIST[f"order_{query.order}"]),
    )
    return statement, params


async def list_page(conn: AsyncConnection[Any], query: TaskQuery) -> list[TaskRow]:
    """Up to query.limit tasks after the keyset position, in query.order."""
    statement, params = _compose(query)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(statement, params)
        return [task_row(r) for r in await cur.fetchall()]


async def page_slices(
    conn: AsyncConnection[Any],
    query: TaskQuery,
    *,
    basic: bool,
    worker_seen_within: timedelta,
    slice_rows: int,
) -> AsyncGenerator[list[tuple[TaskRow, str | None]]]:
    """ListTasks' rows (up to query.limit, in query.order), each with why it waits (None
    when it does not), `slice_rows` at a time; `basic` leaves input, result and progress
    None. One statement; psycopg turns a row into Python values only when it is fetched,
    so each slice costs its own rows' decoding and the caller may yield in between."""
    statement, params = _compose(query, _PAGE_COLUMNS[basic], _LIST["page_join"])
    params["worker_seen_within"] = worker_seen_within
    width = len(TASK_COLUMNS)
    async with conn.cursor() as cur:
        cur.adapters.register_loader("jsonb", JsonbLoader)
        await cur.execute(statement, params)
        while rows := await cur.fetchmany(slice_rows):
            yield [(TaskRow(*row[:width]), row[width]) for row in rows]


async def cancel(
    conn: AsyncConnection[Any],
    project: str,
    id: uuid.UUID,
    *,
    reason: str,
    sources: Sequence[str],
    event_type: str,
) -> TaskRow | None:
    """CANCELLED now if its state is one of `sources` (event appended); else None."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            _CANCEL,
            {
                "project": project,
                "id": id,
                "reason": reason,
                "sources": list(sources),
                "event_type": event_type,
            },
        )
        row = await cur.fetchone()
    return task_row(row) if row else None


async def request_cancel(
    conn: AsyncConnection[Any], project: str, id: uuid.UUID, *, reason: str
) -> TaskRow | None:
    """Sets cancel_requested on a RUNNING task; None when it is not RUNNING."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_REQUEST_CANCEL, {"project": project, "id": id, "reason": reason})
        row = await cur.fetchone()
    return task_row(row) if row else None


async def tree(
    conn: AsyncConnection[Any], project: str, id: uuid.UUID, *, limit: int
) -> list[TaskRow]:
    """Up to `limit` tasks of the named task's tree, parents first; [] if it is missing."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_TREE, {"project": project, "id": id, "limit": limit})
        return [task_row(r) for r in await cur.fetchall()]


async def delete_named(
    conn: AsyncConnection[Any],
    project: str,
    ids: Sequence[uuid.UUID],
    *,
    terminal: Sequence[str],
) -> tuple[int, list[uuid.UUID]]:
    """Deletes the terminal tasks of `ids`; returns (deleted, the non-terminal ids)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            _DELETE["names"], {"project": project, "ids": list(ids), "terminal": list(terminal)}
        )
        row = await cur.fetchone()
    assert row is not None
    return int(row["deleted"]), list(row["skipped"])


async def count_matching(conn: AsyncConnection[Any], query: TaskQuery) -> int:
    """How many tasks match `query`, counting no further than query.limit."""
    select, params = _compose(replace(query, after_id=None))
    statement = pgsql.SQL(_LIST["count"]).format(select=select)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(statement, params)
        row = await cur.fetchone()
    return int(row["n"]) if row else 0


async def delete_matching(
    conn: AsyncConnection[Any], query: TaskQuery, *, terminal: Sequence[str]
) -> int:
    """Deletes up to query.limit tasks matching `query` (its states all terminal)."""
    select, params = _compose(query)
    statement = pgsql.SQL(_DELETE["filter"]).format(select=select)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(statement, params | {"terminal": list(terminal)})
        row = await cur.fetchone()
    assert row is not None
    return int(row["deleted"])
