"""Leases in SQL: take ready tasks, settle reports, extend leases (the worker's hot path).

Every function is one statement on an autocommit connection, so it is one round trip and
one commit; the events of each change are appended by the same statement.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, LiteralString

import psycopg
from psycopg import AsyncConnection, AsyncRawCursor
from psycopg.rows import dict_row, tuple_row
from psycopg.types.array import ListBinaryDumper
from psycopg.types.json import Jsonb

from conveyor.server.store import sql
from conveyor.server.store.db import prepare_at_once
from conveyor.server.store.task_rows import (
    TASK_COLUMNS,
    JsonbLoader,
    TaskRow,
    task_row,
    task_row_maker,
)

_PARAM = re.compile(r"%\((\w+)\)s")


@dataclass(frozen=True, slots=True)
class _Raw:
    """A statement with `$n` placeholders and the parameter name of each n."""

    text: LiteralString
    names: tuple[str, ...]

    def args(self, params: dict[str, Any]) -> list[Any]:
        return [params[n] for n in self.names]


def _compact(text: LiteralString) -> _Raw:
    """The statement without comments and indentation, its `%(name)s` turned into `$n`.

    psycopg caches the parse of a statement (placeholders to $n) only below 4 KiB of
    text, and parsing the settle statement at every call costs more than a tenth of a
    millisecond: so it is converted once here and run on a raw cursor, which sends it
    as it is. Our SQL has no `--` or `%(` inside literals.
    """
    lines = (line.split("--", 1)[0].strip() for line in text.splitlines())
    compact = " ".join(line for line in lines if line)
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    return _Raw(_PARAM.sub(number, compact), tuple(names))


_BLOCKS = sql.load_blocks("lease_report")
_ENDED_KEPT = (
    "project",
    "id",
    "queue",
    "state",
    "attempt",
    "start_time",
    "end_time",
    "update_time",
)
"""What a lean settle returns of an ended task: what metrics.count_settled and the
retry check read; the other columns are NULL."""


def _columns(alias: str, kept: Sequence[str] = TASK_COLUMNS) -> str:
    """TaskRow's columns from `alias`, those not `kept` NULL, each named."""
    return ", ".join(
        f"{alias}.{c} AS {c}" if c in kept else f"(NULL::tasks).{c} AS {c}" for c in TASK_COLUMNS
    )


def _union(part: str, present: Sequence[str]) -> str:
    return "\nUNION ALL\n".join(_BLOCKS[f"{part}_{p}"] for p in present)


def _settle(completes: bool, fails: bool, ready: str | None, lean: bool, admit: bool) -> _Raw:
    """The statement for a call with these parts (`ready`: its ready block, None: no lease;
    `admit`: else admit_check), only the blocks it needs (see lease_report.sql)."""
    ended = [p for p, has in (("s", completes), ("f", fails)) if has]
    written = [*ended, "l"] if ready else ended
    ctes = [_BLOCKS["completes"]] if completes else []
    ctes += [_BLOCKS["fails"]] if fails else []
    if ended:
        ctes.append(_BLOCKS["attempts_ended"].replace("ENDED", _union("attempts_ended", ended)))
    if ready:
        ctes += [_BLOCKS[ready], _BLOCKS["admit" if admit else "admit_check"], _BLOCKS["lease"]]
    ctes.append(_BLOCKS["events"].replace("PARTS", _union("events", written)))
    rows = [*written, "rate_wait"] if ready else list(written)
    if ended:
        ctes.append(_BLOCKS["ended"].replace("PARTS", _union("ended", ended)))
        ctes += [] if ready else [_BLOCKS["not_leased"]]
        rows.append("freed")
    if lean:
        words = {
            "ENDED_S": _columns("s", _ENDED_KEPT),
            "ENDED_F": _columns("f", _ENDED_KEPT),
            "LEASED_L": _columns("l"),
            "NO_TASK": _columns("", ()),
        }
    else:
        words = {
            "ENDED_S": "s.*",
            "ENDED_F": "f.*",
            "LEASED_L": "l.*",
            "NO_TASK": "(NULL::tasks).*",
        }
    select = _union("rows", rows)
    for word, columns in words.items():
        select = select.replace(word, columns)
    return _compact("WITH " + ",\n".join(ctes) + "\n" + select)


_STATEMENTS: dict[tuple[bool, bool, str | None, bool, bool], _Raw] = {}


def _statement(
    completes: bool, fails: bool, ready: str | None, lean: bool, admit: bool = True
) -> _Raw:
    key = (completes, fails, ready, lean, admit)
    statement = _STATEMENTS.get(key)
    if statement is None:
        statement = _STATEMENTS[key] = _settle(*key)
    return statement


_SETTLE_ONE_QUEUE = _statement(True, True, "ready_one_queue", lean=False)
_SETTLE_MANY_QUEUES = _statement(True, True, "ready_many_queues", lean=False)
"""Every block (tests read their plans)."""

WINDOW = 4
"""Candidates a limited lease looks at first (at least; 4 per wanted task)."""
SCAN = 500
"""Most candidates a limited lease looks at, when the window's own limits held it back."""
ADMIT_HOLD = 30.0
"""Seconds the leases of queues where limits applied keep the admit block."""
_ADMIT_NEEDED = "CV001"  # conveyor_admit_check's SQLSTATE (migrations/0042)
_ADMITTING: dict[tuple[str, tuple[str, ...]], float] = {}  # (project, queues) -> until
_LOOKUP = sql.load("lease_lookup")
_EXTEND = sql.load("lease_extend")


@dataclass(frozen=True, slots=True)
class CompleteRow:
    id: uuid.UUID
    lease_id: uuid.UUID
    result_json: str | None
    """The result as JSON text; None stores SQL NULL (no result)."""
    summary: str
    resume_token: str | None
    """None keeps the task's token."""


@dataclass(frozen=True, slots=True)
class FailRow:
    id: uuid.UUID
    lease_id: uuid.UUID
    error: dict[str, Any]
    retryable: bool


@dataclass(frozen=True, slots=True)
class TakeRow:
    worker: str
    queues: Sequence[str]
    limit: int
    lease_ms: int | None
    """None leases each task for its own lease_duration."""


@dataclass(frozen=True, slots=True)
class SettledRows:
    """What the report statement returned: the tasks it ended and the tasks it leased."""

    succeeded: dict[uuid.UUID, TaskRow]
    failed: dict[uuid.UUID, TaskRow]
    leased: list[TaskRow]
    """In lease order: priority, schedule_time, id."""
    rate_wait: float | None = None
    """Seconds until a ready task that a rate limit held back could start (None: none)."""


@dataclass(frozen=True, slots=True)
class Lookup:
    """What a report that matched nothing ran into."""

    task: TaskRow | None
    attempt_outcome: str | None
    """The outcome of the attempt the reported lease_id belongs to (None: no such attempt)."""


@dataclass(frozen=True, slots=True)
class Extended:
    id: uuid.UUID
    lease_id: uuid.UUID
    lease_expire_time: datetime
    cancel_requested: bool


def _lease_order(row: TaskRow) -> tuple[int, datetime, uuid.UUID]:
    return (row.priority, row.schedule_time, row.id)


async def settle(
    conn: AsyncConnection[Any],
    *,
    project: str,
    completes: Sequence[CompleteRow] = (),
    fails: Sequence[FailRow] = (),
    take: TakeRow | None = None,
    rand: float | None = None,
    ended_rows: bool = True,
) -> SettledRows:
    """Applies the reports whose lease is still current, then leases `take.limit` tasks.

    Task ids must be distinct across `completes` and `fails` (one statement cannot change a
    row twice). `rand` draws the retry jitter; None lets the database draw per task.
    `ended_rows=False`: the rows of the ended tasks hold only _ENDED_KEPT (None elsewhere).
    """
    queues = list(take.queues) if take else []
    # An absent part is NULL rather than an empty array: unnest(NULL) is empty too, and
    # NULL costs nothing to send.
    params = {
        "project": project,
        "c_ids": [c.id for c in completes] or None,
        "c_lease_ids": [c.lease_id for c in completes] or None,
        "c_results": [c.result_json for c in completes] or None,
        "c_summaries": [c.summary for c in completes] or None,
        "c_resume_tokens": [c.resume_token for c in completes] or None,
        "f_ids": [f.id for f in fails] or None,
        "f_lease_ids": [f.lease_id for f in fails] or None,
        "f_errors": [Jsonb(f.error) for f in fails] or None,
        "f_retryable": [f.retryable for f in fails] or None,
        "rand": rand,
        "worker": take.worker if take else "",
        "queue": queues[0] if queues else "",
        "queues": queues,
        "limit": take.limit if take else 0,
        "lease_ms": take.lease_ms if take else None,
        "window": WINDOW,
        "scan": SCAN,
    }
    succeeded: dict[uuid.UUID, TaskRow] = {}
    failed: dict[uuid.UUID, TaskRow] = {}
    leased: list[TaskRow] = []
    rate_wait: float | None = None
    ready = None
    if take is not None:
        ready = "ready_many_queues" if len(queues) > 1 else "ready_one_queue"
    if not completes and not fails and ready is None:
        return SettledRows(succeeded, failed, leased, rate_wait)
    # Tuple rows (no dict of sixty keys per row); its columns are outcome, rate_wait,
    # then the task's.
    raws, make = await _run(conn, bool(completes), bool(fails), ready, not ended_rows, params)
    for raw in raws:
        outcome = raw[0]
        if outcome == "rate_wait":
            rate_wait = raw[1]
            continue
        row = make(raw)
        if outcome == "leased":
            leased.append(row)
        elif outcome == "succeeded":
            succeeded[row.id] = row
        else:
            failed[row.id] = row
    leased.sort(key=_lease_order)
    return SettledRows(succeeded, failed, leased, rate_wait)


async def _run(
    conn: AsyncConnection[Any],
    completes: bool,
    fails: bool,
    ready: str | None,
    lean: bool,
    params: dict[str, Any],
) -> tuple[list[Any], Callable[[Sequence[Any]], TaskRow]]:
    """Runs the statement; a lease without the admit block (its start-up and probe cost
    each lease ~35-80 us of database CPU) unless limits applied to its queues lately.
    Where the block would have admitted, conveyor_admit_check rolls the statement back
    whole and it runs again with the block: the same outcome, one statement later."""
    hint = (params["project"], tuple(params["queues"]))
    # A rolled-back try is one only on its own transaction (the pool's: autocommit).
    admit = ready is None or not conn.autocommit or _ADMITTING.get(hint, 0) > time.monotonic()
    cur = _settle_cursor(conn)
    while True:
        statement = _statement(completes, fails, ready, lean, admit)
        try:
            # Prepared at once: planning this statement costs more than running it.
            await cur.execute(statement.text, statement.args(params), prepare=prepare_at_once(conn))
        except psycopg.Error as e:
            if admit or e.sqlstate != _ADMIT_NEEDED:
                raise
            if len(_ADMITTING) > 4096:  # worker queue sets come and go
                _ADMITTING.clear()
            _ADMITTING[hint] = time.monotonic() + ADMIT_HOLD
            admit = True
            continue
        return await cur.fetchall(), _row_maker(cur, statement.text)


_CURSOR = "_conveyor_settle_cursor"


def _settle_cursor(conn: AsyncConnection[Any]) -> AsyncRawCursor[Any]:
    """The connection's settle cursor, made at its first settle and kept (never closed;
    it goes with its connection).

    A cursor made per call cost its caller 70-100 us of CPU each time (a one-task
    settle loop, load 2.5-2.9: its adapters copied to register two, a Transformer whose
    dumpers and sixty row loaders were looked up again), a fixed cost that dominates at
    concurrency 1 and in a hand-off's lease; psycopg keeps a cursor's Transformer while
    the same statement text runs again, so a settle of the same shape finds them ready."""
    cur: AsyncRawCursor[Any] | None = getattr(conn, _CURSOR, None)
    if cur is None or cur.closed:
        # A traced connection carries a traced raw cursor (server/tracing.py).
        cursor_class = getattr(conn, "_conveyor_raw_cursor", AsyncRawCursor)
        cur = cursor_class(conn, row_factory=tuple_row)
        cur.adapters.register_loader("jsonb", JsonbLoader)
        # The arrays in binary: psycopg writes a text array element by element through
        # regular expressions (quoting, escaping), ~7 us a reported task for its ids,
        # lease, result and summary, against ~1 in binary. Every array parameter is
        # cast in the SQL, so the statement reads the same values.
        cur.adapters.register_dumper(list, ListBinaryDumper)
        setattr(conn, _CURSOR, cur)
    return cur


_MAKERS: dict[tuple[str, int], Callable[[Sequence[Any]], TaskRow]] = {}
"""The row maker of each statement (and column count, which a new column changes):
reading a cursor's description builds a Column for each of its sixty-odd columns, ~50 us
a call (load 7), as much as the rest of a one-task cycle's rows."""


def _row_maker(cur: AsyncRawCursor[Any], text: str) -> Callable[[Sequence[Any]], TaskRow]:
    result = cur.pgresult
    key = (text, result.nfields if result is not None else 0)
    make = _MAKERS.get(key)
    if make is None:
        make = _MAKERS[key] = task_row_maker([c.name for c in cur.description or ()])
    return make


async def lookup(
    conn: AsyncConnection[Any], project: str, reports: Sequence[tuple[uuid.UUID, uuid.UUID]]
) -> list[Lookup]:
    """For each (task id, lease_id): the task now and its attempt under that lease."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            _LOOKUP,
            {
                "project": project,
                "ids": [task_id for task_id, _ in reports],
                "lease_ids": [lease_id for _, lease_id in reports],
            },
        )
        rows = await cur.fetchall()
    return [
        Lookup(task_row(r) if r["id"] is not None else None, r["attempt_outcome"]) for r in rows
    ]


async def extend(
    conn: AsyncConnection[Any],
    project: str,
    beats: Sequence[tuple[uuid.UUID, uuid.UUID, int | None, dict[str, Any] | None]],
) -> dict[uuid.UUID, Extended]:
    """Extends the leases still held: (task id, lease_id, lease_ms, progress) -> by task id."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            _EXTEND,
            {
                "project": project,
                "ids": [b[0] for b in beats],
                "lease_ids": [b[1] for b in beats],
                "lease_ms": [b[2] for b in beats],
                "progress": [Jsonb(b[3]) if b[3] is not None else None for b in beats],
            },
            prepare=prepare_at_once(conn),
        )
        rows = await cur.fetchall()
    return {r["id"]: Extended(**r) for r in rows}
