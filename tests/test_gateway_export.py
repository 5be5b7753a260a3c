"""ExportTasks over REST: CSV, XLSX and NDJSON downloads, projection, filter, flat memory."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
import zipfile
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import httpx
import psycopg
import pytest
import pytest_asyncio

from conveyor.server.app import ConveyorServer
from conveyor.server.domain import export_columns, task_list
from conveyor.server.errors import Violations
from conveyor.server.render.tasks import task_message
from conveyor.server.store import tasks as store
from conveyor.v1 import task_pb2

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"

# 100,000 tasks in one statement: half SUCCEEDED (with worker, times, summary), half
# QUEUED, priorities 1..9, every tenth labelled env=prod.
INSERT_TASKS = """
INSERT INTO tasks (project, id, queue, kind, input, priority, state, labels, attempt,
                   root_task, worker, summary, create_time, start_time, end_time)
SELECT 'default', s.id, CASE WHEN n %% 3 = 0 THEN 'reports' ELSE 'default' END,
       'report.build', jsonb_build_object('n', n), 1 + n %% 9,
       CASE WHEN n %% 2 = 0 THEN 'SUCCEEDED' ELSE 'QUEUED' END,
       CASE WHEN n %% 10 = 0 THEN '{"env": "prod"}'::jsonb ELSE '{}'::jsonb END,
       CASE WHEN n %% 2 = 0 THEN 1 ELSE 0 END,
       s.id, CASE WHEN n %% 2 = 0 THEN 'w-1' ELSE '' END,
       CASE WHEN n %% 2 = 0 THEN 'built report ' || n ELSE '' END,
       now(), CASE WHEN n %% 2 = 0 THEN now() END, CASE WHEN n %% 2 = 0 THEN now() END
FROM (SELECT n, gen_random_uuid() AS id FROM generate_series(1, %(count)s) AS n) AS s
"""


def insert_tasks(database_url: str, count: int) -> None:
    with psycopg.connect(database_url) as conn:
        conn.execute(INSERT_TASKS, {"count": count})


@pytest_asyncio.fixture
async def http(server: ConveyorServer, admin_key: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=server.http_base_url,
        headers={"Authorization": f"Bearer {admin_key}"},
        # An XLSX file's first byte comes after its last row is written: 100k rows took
        # over 60 s on a 2-core machine at load 14.
        timeout=300,
    ) as client:
        yield client


def _rss_bytes() -> int:
    text = Path("/proc/self/status").read_text()
    found = re.search(r"^VmRSS:\s+(\d+) kB", text, re.MULTILINE)
    assert found is not None
    return int(found.group(1)) * 1024


class RssPeak:
    """Samples this process's resident memory while a block runs (server and client
    share the process, so this bounds the server's growth)."""

    def __init__(self) -> None:
        self.baseline = 0
        self.peak = 0
        self._task: asyncio.Task[None] | None = None

    async def _sample(self) -> None:
        while True:
            self.peak = max(self.peak, _rss_bytes())
            await asyncio.sleep(0.02)

    async def __aenter__(self) -> RssPeak:
        self.baseline = self.peak = _rss_bytes()
        self._task = asyncio.create_task(self._sample())
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._task is not None
        self._task.cancel()
        self.peak = max(self.peak, _rss_bytes())

    @property
    def growth(self) -> int:
        return self.peak - self.baseline


def xlsx_rows(path: Path) -> int:
    """Rows in the first sheet, counted while streaming its XML."""
    count = 0
    tail = b""
    with zipfile.ZipFile(path) as book, book.open("xl/worksheets/sheet1.xml") as sheet:
        while chunk := sheet.read(1 << 20):
            data = tail + chunk
            count += data.count(b"<row ")
            tail = data[-8:]
            count -= tail.count(b"<row ")
    return count + tail.count(b"<row ")


@pytest.mark.timeout(120)
async def test_exporting_100k_tasks_keeps_memory_flat(
    http: httpx.AsyncClient, database_url: str, tmp_path: Path
) -> None:
    insert_tasks(database_url, 100_000)
    # Warm up (imports, pool connections, gRPC channel) so they are not counted.
    warm = await http.get("/v1/projects/default/tasks:export", params={"filter.states": "FAILED"})
    assert warm.status_code == 200, warm.text

    async with RssPeak() as csv_memory:
        lines = 0
        size = 0
        async with http.stream("GET", "/v1/projects/default/tasks:export") as response:
            assert response.status_code == 200
            assert response.headers["content-type"] == "text/csv; charset=utf-8"
            assert response.headers["content-disposition"] == 'attachment; filename="tasks.csv"'
            async for chunk in response.aiter_bytes():
                # Count b"\n", not b"\r\n": a chunk may end between the two bytes.
                lines += chunk.count(b"\n")
                size += len(chunk)
    assert lines == 100_001  # the header and one line per task
    assert csv_memory.growth < 50 * 1024 * 1024, csv_memory.growth

    path = tmp_path / "tasks.xlsx"
    async with (
        RssPeak() as xlsx_memory,
        http.stream(
            "GET", "/v1/projects/default/tasks:export", params={"format": "EXPORT_FORMAT_XLSX"}
        ) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"] == XLSX
        assert response.headers["content-disposition"] == 'attachment; filename="tasks.xlsx"'
        with path.open("wb") as file:
            async for chunk in response.aiter_bytes():
                file.write(chunk)
    assert xlsx_rows(path) == 100_001
    assert xlsx_memory.growth < 50 * 1024 * 1024, xlsx_memory.growth


async def test_projection_filter_and_formats(http: httpx.AsyncClient, database_url: str) -> None:
    insert_tasks(database_url, 40)
    params: list[tuple[str, str | int | float | bool | None]] = [
        ("filter.states", "TASK_STATE_SUCCEEDED"),
        ("filter.labels[env]", "prod"),
        ("fields", "name"),
        ("fields", "state"),
        ("fields", "labels"),
        ("fields", "error.message"),
        ("fields", "input"),
        ("fields", "end_time"),
        ("fields", "retryPolicy.maxAttempts"),
    ]
    response = await http.get("/v1/projects/default/tasks:export", params=params)
    assert response.status_code == 200, response.text
    rows = list(csv.reader(io.StringIO(response.text)))
    assert rows[0] == [
        "name",
        "state",
        "labels",
        "error.message",
        "input",
        "end_time",
        "retry_policy.max_attempts",
    ]
    assert len(rows) == 1 + 4  # n = 10, 20, 30, 40
    for row in rows[1:]:
        assert row[0].startswith("projects/default/tasks/")
        assert row[1:4] == ["TASK_STATE_SUCCEEDED", '{"env":"prod"}', ""]
        assert json.loads(row[4])["n"] in (10, 20, 30, 40)
        assert row[5].endswith("Z")
        assert row[6] == "3"

    ndjson = await http.get(
        "/v1/projects/default/tasks:export",
        params=[*params[:2], ("format", "EXPORT_FORMAT_NDJSON"), ("fields", "error.message")],
    )
    assert ndjson.headers["content-type"] == "application/x-ndjson"
    assert ndjson.headers["content-disposition"] == 'attachment; filename="tasks.ndjson"'
    records = [json.loads(line) for line in ndjson.text.splitlines()]
    assert records == [{"error": {"message": None}}] * 4

    empty = await http.get(
        "/v1/projects/default/tasks:export",
        params={"filter.queues": "nowhere", "format": "EXPORT_FORMAT_NDJSON"},
    )
    assert (empty.status_code, empty.content) == (200, b"")
    assert empty.headers["content-type"] == "application/x-ndjson"


async def test_unknown_export_fields_are_invalid(http: httpx.AsyncClient) -> None:
    response = await http.get(
        "/v1/projects/default/tasks:export",
        params=[("fields", "name"), ("fields", "colour"), ("fields", "attempts")],
    )
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert [e["field"] for e in problem["errors"]] == ["fields", "fields"]
    assert "colour" in problem["errors"][0]["description"]


async def test_cells_read_from_the_row_equal_the_task_message(
    server: ConveyorServer, database_url: str
) -> None:
    insert_tasks(database_url, 10)
    with psycopg.connect(database_url) as conn:
        conn.execute(
            """
            UPDATE tasks SET error = '{"type": "Boom", "message": "it broke", "retryable": true}',
                   concurrency_key = 'k', correlation_id = 'c-1', parent_task = root_task,
                   state_reason = 'why', lease_expire_time = now(), cancel_requested = true
            WHERE priority > 5
            """
        )
    query = task_list.parse_filter(Violations(), task_pb2.TaskFilter(), "default")
    async with server.context.pool.connection() as conn:
        rows = await store.list_page(conn, replace(query, limit=100))
    assert len(rows) == 10
    columns = export_columns.parse_fields(list(export_columns._FROM_ROW))
    for row in rows:
        task = task_message(row)
        for column in columns:
            assert column.from_row is not None
            assert column.from_row(row) == column.value(task), column.path
