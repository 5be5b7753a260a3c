"""The commands table (the audit chain) and command_states (how far each one came).

Every function runs in the caller's connection; appends must be inside a transaction
(the head lock lasts until it ends).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg import sql as pgsql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from conveyor.server.store import sql
from conveyor.server.store.wrap import wrap_exceptions

__all__ = [
    "CommandQuery",
    "CommandRow",
    "Dispatched",
    "Head",
    "NewCommand",
    "append",
    "chain",
    "dispatch",
    "expire",
    "get",
    "get_by_key",
    "head_sequence",
    "list_page",
    "lock_head",
    "next_deadline",
    "set_status",
]

_HEAD_LOCK = sql.load("command_head_lock")
_HEAD_GET = sql.load("command_head_get")
_APPEND = sql.load("command_append")
_GET = sql.load("command_get")
_GET_BY_KEY = sql.load("command_get_by_key")
_CHAIN = sql.load("command_chain")
_LIST = sql.load_blocks("command_list")
_SET_STATUS = sql.load("command_set_status")
_DISPATCH = sql.load("command_dispatch")
_TIMEOUT = sql.load("command_timeout")
_NEXT_DEADLINE = sql.load("command_next_deadline")


@dataclass(frozen=True, slots=True)
class CommandRow:
    """A chained command; the status fields are empty when read for verification."""

    project: str
    sequence: int
    verb: str
    target: str
    args: dict[str, Any]
    issued_by: str
    idempotency_key: str
    create_time: datetime
    prev_digest: str
    digest: str
    signature: str
    status: str = ""
    result: dict[str, Any] = field(default_factory=dict)
    error: dict[str, Any] | None = None
    worker: str = ""
    deadline: datetime | None = None
    dispatch_time: datetime | None = None
    finish_time: datetime | None = None

    @property
    def name(self) -> str:
        return f"projects/{self.project}/commands/{self.sequence}"


_FIELDS = frozenset(CommandRow.__dataclass_fields__)


def _row(data: dict[str, Any]) -> CommandRow:
    return CommandRow(**{k: v for k, v in data.items() if k in _FIELDS})


@dataclass(frozen=True, slots=True)
class Head:
    sequence: int
    digest: str
    now: datetime


@dataclass(frozen=True, slots=True)
class NewCommand:
    project: str
    sequence: int
    verb: str
    target: str
    args: dict[str, Any]
    issued_by: str
    idempotency_key: str
    create_time: datetime
    prev_digest: str
    digest: str
    signature: str
    status: str
    result: dict[str, Any]
    worker: str
    timeout_ms: int | None


async def lock_head(conn: AsyncConnection[Any], project: str) -> Head:
    """Locks the project's chain head until the transaction ends; NotFound for no project."""
    # A system key may name any project; one that does not exist has no chain, and the
    # change it asked for rolls back with this transaction.
    with wrap_exceptions(project):
        cur = await conn.execute(_HEAD_LOCK, {"project": project})
    row = await cur.fetchone()
    assert row is not None
    return Head(int(row[0]), str(row[1]), row[2])


async def head_sequence(conn: AsyncConnection[Any], project: str) -> int:
    cur = await conn.execute(_HEAD_GET, {"project": project})
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def append(conn: AsyncConnection[Any], new: NewCommand) -> CommandRow:
    params = {
        "project": new.project,
        "sequence": new.sequence,
        "verb": new.verb,
        "target": new.target,
        "args": Jsonb(new.args),
        "issued_by": new.issued_by,
        "idempotency_key": new.idempotency_key,
        "create_time": new.create_time,
        "prev_digest": new.prev_digest,
        "digest": new.digest,
        "signature": new.signature,
        "status": new.status,
        "result": Jsonb(new.result),
        "worker": new.worker,
        "timeout_ms": new.timeout_ms,
    }
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_APPEND, params)
        row = await cur.fetchone()
    assert row is not None
    return _row(row)


async def get(conn: AsyncConnection[Any], project: str, sequence: int) -> CommandRow | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_GET, {"project": project, "sequence": sequence})
        row = await cur.fetchone()
    return _row(row) if row else None


async def get_by_key(
    conn: AsyncConnection[Any], project: str, issued_by: str, idempotency_key: str
) -> CommandRow | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            _GET_BY_KEY,
            {"project": project, "issued_by": issued_by, "idempotency_key": idempotency_key},
        )
        row = await cur.fetchone()
    return _row(row) if row else None


async def chain(
    conn: AsyncConnection[Any], project: str, *, after: int, limit: int
) -> list[CommandRow]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_CHAIN, {"project": project, "after": after, "limit": limit})
        return [_row(r) for r in await cur.fetchall()]


@dataclass(frozen=True)
class CommandQuery:
    project: str
    limit: int
    statuses: Sequence[str] = ()
    verbs: Sequence[str] = ()
    issued_by: str | None = None
    create_time_after: datetime | None = None
    create_time_before: datetime | None = None
    before_sequence: int | None = None


async def list_page(conn: AsyncConnection[Any], query: CommandQuery) -> list[CommandRow]:
    """Newest first, up to query.limit, below the keyset position."""
    params: dict[str, Any] = {"project": query.project, "limit": query.limit}
    blocks: list[str] = []
    for block, value in (
        ("statuses", list(query.statuses) or None),
        ("verbs", list(query.verbs) or None),
        ("issued_by", query.issued_by),
        ("create_time_after", query.create_time_after),
        ("create_time_before", query.create_time_before),
        ("before_sequence", query.before_sequence),
    ):
        if value is not None:
            blocks.append(block)
            params[block] = value
    statement = pgsql.SQL(_LIST["select"]).format(
        filters=pgsql.SQL("\n").join(pgsql.SQL(_LIST[b]) for b in blocks)
    )
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(statement, params)
        return [_row(r) for r in await cur.fetchall()]


async def set_status(
    conn: AsyncConnection[Any],
    project: str,
    sequence: int,
    *,
    status: str,
    sources: Sequence[str],
    result: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
    quiet: bool = False,
) -> bool:
    """Moves a command to `status` when it is in one of `sources`; whether it moved.

    `quiet` skips the event (a progress update that leaves the status as it was).
    """
    cur = await conn.execute(
        _SET_STATUS,
        {
            "project": project,
            "sequence": sequence,
            "status": status,
            "sources": list(sources),
            "result": Jsonb(result or {}),
            "error": Jsonb(error) if error is not None else None,
            "quiet": status if quiet else "",
        },
    )
    row = await cur.fetchone()
    return bool(row and row[0])


@dataclass(frozen=True, slots=True)
class Dispatched:
    sequence: int
    verb: str
    args: dict[str, Any]


async def dispatch(
    conn: AsyncConnection[Any], project: str, worker: str, *, redeliver: bool
) -> list[Dispatched]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_DISPATCH, {"project": project, "worker": worker, "redeliver": redeliver})
        return [Dispatched(r["sequence"], r["verb"], r["args"]) for r in await cur.fetchall()]


async def expire(conn: AsyncConnection[Any], *, limit: int = 1000) -> int:
    cur = await conn.execute(_TIMEOUT, {"limit": limit})
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def next_deadline(conn: AsyncConnection[Any]) -> datetime | None:
    cur = await conn.execute(_NEXT_DEADLINE)
    row = await cur.fetchone()
    return row[0] if row else None
