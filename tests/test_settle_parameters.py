"""The settle statement's array parameters (sent in binary) read back as written.

Text arrays needed quoting and escaping element by element; binary arrays need none,
and every array parameter is cast in the SQL. What a text array would have had to
quote (quotes, backslashes, braces, commas, the word NULL, empty strings) and what it
would have had to escape in JSON arrives unchanged.
"""

from __future__ import annotations

import json

import psycopg
import pytest

from conveyor.server.store import leases
from conveyor.server.store.db import Pool

TRICKY = ['a "b" \\ {c,d}', "NULL", "", "é ü \U0001f600", "x\ny\tz"]


async def test_reports_with_tricky_text_settle_unchanged(pool: Pool) -> None:
    async with pool.connection() as conn:
        await conn.execute(
            "INSERT INTO tasks (project, id, queue, kind, input, state, root_task)"
            " SELECT 'default', id, 'tricky', 'k', '{}', 'QUEUED', id"
            " FROM (SELECT gen_random_uuid() AS id FROM generate_series(1, 10)) AS g"
        )
        take = leases.TakeRow("w", ["tricky"], 10, None)
        rows = (await leases.settle(conn, project="default", take=take)).leased
        done = [
            leases.CompleteRow(
                r.id,
                r.lease_id,  # type: ignore[arg-type]
                json.dumps({"s": text, "n": [1, 2.5, None]}),
                text,
                text or None,
            )
            for r, text in zip(rows[:5], TRICKY, strict=True)
        ]
        failed = [
            leases.FailRow(r.id, r.lease_id, {"type": text, "message": text}, False)  # type: ignore[arg-type]
            for r, text in zip(rows[5:], TRICKY, strict=True)
        ]
        settled = await leases.settle(conn, project="default", completes=done, fails=failed)
        assert len(settled.succeeded) == 5 and len(settled.failed) == 5
        cur = await conn.execute(
            "SELECT id, summary, resume_token, result, error FROM tasks WHERE queue = 'tricky'"
        )
        stored = {row[0]: row[1:] for row in await cur.fetchall()}
    for r, text in zip(rows[:5], TRICKY, strict=True):
        assert stored[r.id][:3] == (text, text, {"s": text, "n": [1, 2.5, None]})
    for r, text in zip(rows[5:], TRICKY, strict=True):
        error = stored[r.id][3]
        assert (error["type"], error["message"]) == (text, text)


async def test_a_connection_keeps_its_settle_cursor_across_shapes_and_errors(
    pool: Pool,
) -> None:
    """One cursor per connection, kept: settles of other shapes (lease only, lean,
    whole rows, fails) and a settle that failed in the database all leave it usable."""
    async with pool.connection() as conn:
        await conn.execute(
            "INSERT INTO tasks (project, id, queue, kind, input, state, root_task)"
            " SELECT 'default', id, 'kept', 'k', '{\"n\": 1}', 'QUEUED', id"
            " FROM (SELECT gen_random_uuid() AS id FROM generate_series(1, 4)) AS g"
        )
        take = leases.TakeRow("w", ["kept"], 2, None)
        a, b = (await leases.settle(conn, project="default", take=take)).leased
        cursor = getattr(conn, "_conveyor_settle_cursor")  # noqa: B009 - the kept cursor
        broken = leases.CompleteRow(a.id, a.lease_id, "{not json", "", None)  # type: ignore[arg-type]
        with pytest.raises(psycopg.errors.InvalidTextRepresentation):
            await leases.settle(conn, project="default", completes=[broken])
        done = leases.CompleteRow(a.id, a.lease_id, '{"ok": true}', "s", None)  # type: ignore[arg-type]
        lean = await leases.settle(
            conn, project="default", completes=[done], take=take, ended_rows=False
        )
        assert list(lean.succeeded) == [a.id] and lean.succeeded[a.id].input is None
        assert len(lean.leased) == 2
        c = lean.leased[0]
        assert c.input == {"n": 1} and c.kind == "k"
        failed = leases.FailRow(b.id, b.lease_id, {"type": "E"}, False)  # type: ignore[arg-type]
        whole = await leases.settle(conn, project="default", fails=[failed])
        assert whole.failed[b.id].state == "FAILED" and whole.failed[b.id].input == {"n": 1}
        assert getattr(conn, "_conveyor_settle_cursor") is cursor  # noqa: B009
