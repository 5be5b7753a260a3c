"""0039: the keys of the hot path (events and tasks -> projects, task_attempts -> tasks)
are kept by triggers checked once per statement: the same refusals, locks and cascades
as the foreign keys they replace."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest
from psycopg.rows import TupleRow

from conveyor.client import AsyncClient
from conveyor.server.app import ConveyorServer
from conveyor.server.errors import NotFound
from conveyor.server.store import leases
from conveyor.server.store.wrap import wrap_exceptions
from conveyor.v1 import task_service_pb2

_COUNTS = """
SELECT (SELECT count(*) FROM tasks WHERE project = %(p)s),
       (SELECT count(*) FROM task_attempts WHERE project = %(p)s),
       (SELECT count(*) FROM events WHERE project = %(p)s),
       (SELECT count(*) FROM task_logs WHERE project = %(p)s)
"""


def _url(server: ConveyorServer) -> str:
    url = server.settings.database_url
    assert url is not None
    return url


async def _counts(conn: psycopg.AsyncConnection[TupleRow], project: str) -> tuple[int, ...]:
    row = await (await conn.execute(_COUNTS, {"p": project})).fetchone()
    assert row is not None
    return tuple(int(n) for n in row)


async def _project_with_rows(server: ConveyorServer, admin_key: str, project: str) -> None:
    """A project with a finished task, a running one with log lines, and a queued one."""
    # Inserted, not created by CreateProject: the audit log (commands, which nothing
    # may delete) would then name it, and a project it names cannot be deleted.
    async with await psycopg.AsyncConnection.connect(_url(server), autocommit=True) as conn:
        await conn.execute("INSERT INTO projects (id, webhook_secret) VALUES (%s, 'x')", (project,))
    async with AsyncClient(server.grpc_target, api_key=admin_key, project=project) as client:
        await _rows_of(client)


async def _rows_of(client: AsyncClient) -> None:
    for n in range(3):
        await client.create_task("k", queue="q", input={"n": n})
    done, running = await client.lease_tasks(["q"], worker="w-1", max_tasks=2)
    await client.complete_task(done.task.name, done.lease_id, {"ok": True})
    await client.tasks.AppendTaskLogs(
        task_service_pb2.AppendTaskLogsRequest(
            name=running.task.name,
            lease_id=running.lease_id,
            lines=[task_service_pb2.TaskLogLine(message="a line")],
        )
    )


async def test_deleting_a_project_deletes_its_tasks_attempts_events_and_lines(
    server: ConveyorServer, admin_key: str
) -> None:
    await _project_with_rows(server, admin_key, "doomed")
    await _project_with_rows(server, admin_key, "kept")
    async with await psycopg.AsyncConnection.connect(_url(server)) as conn:
        before = await _counts(conn, "doomed")
        assert before[0] == 3 and before[1] == 2 and before[2] >= 6 and before[3] == 1
        kept = await _counts(conn, "kept")
        await conn.execute("DELETE FROM projects WHERE id = 'doomed'")
        await conn.commit()
        assert await _counts(conn, "doomed") == (0, 0, 0, 0)
        assert await _counts(conn, "kept") == kept


async def test_deleting_a_task_deletes_its_attempts(server: ConveyorServer, admin_key: str) -> None:
    await _project_with_rows(server, admin_key, "p1")
    async with await psycopg.AsyncConnection.connect(_url(server)) as conn:
        leased = await (
            await conn.execute(
                "SELECT DISTINCT task_id FROM task_attempts WHERE project = 'p1' ORDER BY 1"
            )
        ).fetchall()
        assert len(leased) == 2
        await conn.execute("DELETE FROM tasks WHERE project = 'p1' AND id = %s", (leased[0][0],))
        await conn.commit()
        left = await (
            await conn.execute("SELECT task_id FROM task_attempts WHERE project = 'p1'")
        ).fetchall()
        assert left == [leased[1]]


@pytest.mark.parametrize("table", ["events", "tasks"])
async def test_a_row_of_a_missing_project_is_refused_by_the_key_name(
    server: ConveyorServer, table: str
) -> None:
    """The error callers map (store/wrap.py): a ForeignKeyViolation named
    <table>_project_fkey, for a statement whose rows name an existing and a missing
    project alike."""
    rows = {
        "events": "INSERT INTO events (project, type) VALUES ('default', 'x'), ('nope', 'x')",
        "tasks": "INSERT INTO tasks (project, id, queue, kind, state, root_task)"
        " SELECT p, g, 'q', 'k', 'QUEUED', g"
        " FROM unnest(ARRAY['default', 'nope']) p, gen_random_uuid() g",
    }
    async with await psycopg.AsyncConnection.connect(_url(server)) as conn:
        with pytest.raises(psycopg.errors.ForeignKeyViolation) as caught:
            await conn.execute(rows[table])
        assert caught.value.diag.constraint_name == f"{table}_project_fkey"
        assert "(nope)" in (caught.value.diag.message_detail or "")
        await conn.rollback()
        with pytest.raises(NotFound), wrap_exceptions("nope"):
            await conn.execute(rows[table])


async def _waiting(url: str, pid: int) -> None:
    """Returns once backend `pid` waits for a lock."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as watcher:
        while True:
            row = await (
                await watcher.execute(
                    "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,)
                )
            ).fetchone()
            if row is not None and row[0] == "Lock":
                return
            await asyncio.sleep(0.02)


async def test_an_event_written_while_its_project_is_deleted_waits_then_fails(
    server: ConveyorServer,
) -> None:
    """As the key's check did: the event's statement locks the project FOR KEY SHARE, so
    it waits for the uncommitted delete and then finds no project."""
    url = _url(server)
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute("INSERT INTO projects (id, webhook_secret) VALUES ('racing', 'x')")
    async with (
        await psycopg.AsyncConnection.connect(url) as deleter,
        await psycopg.AsyncConnection.connect(url) as writer,
    ):
        await deleter.execute("DELETE FROM projects WHERE id = 'racing'")
        pid = writer.info.backend_pid
        insert = asyncio.ensure_future(
            writer.execute("INSERT INTO events (project, type) VALUES ('racing', 'x')")
        )
        await _waiting(url, pid)
        await deleter.commit()
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            await insert


async def test_a_project_delete_waits_for_an_event_being_written_and_deletes_it(
    server: ConveyorServer,
) -> None:
    """The other order: the delete waits for the writer's lock, then deletes what it
    committed (no event outlives its project)."""
    url = _url(server)
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute("INSERT INTO projects (id, webhook_secret) VALUES ('racing', 'x')")
    async with (
        await psycopg.AsyncConnection.connect(url) as deleter,
        await psycopg.AsyncConnection.connect(url) as writer,
    ):
        await writer.execute("INSERT INTO events (project, type) VALUES ('racing', 'x')")
        pid = deleter.info.backend_pid
        delete: asyncio.Future[Any] = asyncio.ensure_future(
            deleter.execute("DELETE FROM projects WHERE id = 'racing'")
        )
        await _waiting(url, pid)
        await writer.commit()
        await delete
        await deleter.commit()
        assert await _counts(writer, "racing") == (0, 0, 0, 0)


async def test_the_outbox_writes_a_delivery_only_where_a_target_exists(
    server: ConveyorServer,
) -> None:
    """0040: the outbox trigger reads the target first. One UPDATE ending tasks of a
    project with a callback_url and of one without, with and without their own URL:
    a delivery (with the task as it ended) for each that has a target, no other."""
    async with await psycopg.AsyncConnection.connect(_url(server), autocommit=True) as conn:
        await conn.execute(
            "INSERT INTO projects (id, webhook_secret, callback_url)"
            " VALUES ('hooked', 'x', 'https://project.example/'), ('plain', 'x', '')"
        )
        await conn.execute(
            "INSERT INTO tasks (project, id, queue, kind, state, root_task, callback_url)"
            " SELECT p, g, 'q', 'k', 'QUEUED', g, u FROM ("
            "  SELECT p, u, gen_random_uuid() AS g"
            "  FROM unnest(ARRAY['hooked', 'hooked', 'plain', 'plain'],"
            "              ARRAY['', 'https://own.example/', '', 'https://own.example/'])"
            "       AS x (p, u)) s"
        )
        await conn.execute(
            "UPDATE tasks SET state = 'FAILED', end_time = now()"
            " WHERE project IN ('hooked', 'plain')"
        )
        rows = await (
            await conn.execute(
                "SELECT d.project, d.url, d.event_type, d.task ->> 'state'"
                " FROM webhook_deliveries d ORDER BY 1, 2"
            )
        ).fetchall()
    assert rows == [
        ("hooked", "https://own.example/", "task.failed", "FAILED"),
        ("hooked", "https://project.example/", "task.failed", "FAILED"),
        ("plain", "https://own.example/", "task.failed", "FAILED"),
    ]


# conveyor_task_change as 0012 wrote it: what the composite row of 0040 must equal.
_CHANGE_0012 = """
jsonb_build_object(
    'project', t.project, 'id', t.id, 'state', t.state, 'state_reason', t.state_reason,
    'priority', t.priority,
    'attempt', t.attempt, 'max_attempts', t.max_attempts, 'schedule_time', t.schedule_time,
    'worker', t.worker, 'lease_id', t.lease_id, 'lease_expire_time', t.lease_expire_time,
    'cancel_requested', t.cancel_requested, 'result', t.result, 'summary', t.summary,
    'error', t.error, 'resume_token', t.resume_token, 'schedule', t.schedule,
    'start_time', t.start_time, 'end_time', t.end_time, 'update_time', t.update_time,
    'approver', t.approver, 'approved', t.approved, 'approval_comment', t.approval_comment,
    'decide_time', t.decide_time, 'input_version', t.input_version
)"""


async def test_the_change_of_an_event_is_the_object_0012_built(
    server: ConveyorServer, admin_key: str
) -> None:
    """0040 builds conveyor_task_change from a composite row: the same jsonb, key for key
    and NULL for NULL, for tasks queued, running, ended with a result, with an error,
    and decided, with and without the input."""
    await _project_with_rows(server, admin_key, "changes")
    async with await psycopg.AsyncConnection.connect(_url(server), autocommit=True) as conn:
        await conn.execute(
            "UPDATE tasks SET state = 'FAILED', end_time = now(), lease_expire_time = NULL,"
            ' error = \'{"type": "X", "message": "m"}\', approver = \'a\', approved = false,'
            " approval_comment = 'no', decide_time = now(), summary = 's'"
            " WHERE project = 'changes' AND state = 'RUNNING'"
        )
        row = await (
            await conn.execute(
                f"SELECT count(*), count(*) FILTER (WHERE conveyor_task_change(t) = {_CHANGE_0012}"
                f"   AND conveyor_task_change(t, true) = {_CHANGE_0012}"
                "     || jsonb_build_object('input', t.input)),"
                " count(DISTINCT t.state)"
                " FROM tasks t WHERE t.project = 'changes'"
            )
        ).fetchone()
    assert row == (3, 3, 3)


async def test_the_settle_plan_builds_event_changes_inline(database_url: str) -> None:
    """conveyor_task_change stays a single STABLE expression: inlined into the settle
    statement's generic plan, not called as a SQL function per event row."""
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        cur = await conn.execute("EXPLAIN (GENERIC_PLAN, VERBOSE) " + leases._SETTLE_ONE_QUEUE.text)
        plan = "\n".join(row[0] for row in await cur.fetchall())
    assert "conveyor_task_change_fields" in plan
    assert "conveyor_task_change(" not in plan
