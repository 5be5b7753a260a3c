"""ExportTasks: the tasks matching a TaskFilter as CSV, XLSX or NDJSON, in flat memory.

Tasks are read in keyset batches of `BATCH` (the ListTasks filter and query, by id), so
memory holds one batch whatever the size of the export. CSV and NDJSON go out batch by
batch; XLSX (a zip that cannot be streamed while it is written) is written by
xlsxwriter in constant-memory mode to a temporary file, then sent in chunks.

`fields` picks the columns: Task field paths such as `kind`, `error.message` or
`retry_policy.max_attempts` (proto or lowerCamel names), in order. A message field
exports whole (as JSON); `attempts` and `blocked_reason` are not exported (they need
reads per task). Cells: timestamps RFC 3339 (real date cells in XLSX), durations
`"1.5s"`, enums their names, JSON values and maps as compact JSON (nested objects in
NDJSON), unset message fields empty.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from typing import Any

from psycopg_pool import AsyncConnectionPool

from conveyor.server.domain import names, task_list
from conveyor.server.domain.bulk_actions import BulkLimiter
from conveyor.server.domain.export_columns import (
    DEFAULT_FIELDS,
    Cells,
    Column,
    ToMessage,
    parse_fields,
)
from conveyor.server.domain.export_formats import (
    CONTENT_TYPES,
    CsvWriter,
    NdjsonWriter,
    XlsxWriter,
)
from conveyor.server.errors import InvalidArgument, Violations
from conveyor.server.store import tasks as task_store
from conveyor.server.store.task_rows import TaskRow
from conveyor.v1 import enums_pb2, task_pb2

__all__ = [
    "BATCH",
    "CONTENT_TYPES",
    "DEFAULT_FIELDS",
    "XLSX_MAX_ROWS",
    "Column",
    "Exporter",
    "parse_fields",
]

BATCH = 500
# An export of more rows than this is a bulk action (one per project at a time).
BULK_ROWS = 10_000
"""Tasks read per query: the memory an export holds at once."""
CHUNK = 256 * 1024
"""Bytes per streamed chunk (well under gRPC's 4 MiB message limit)."""
_NOT_BASIC = frozenset({"input", "result"})
"""The Task fields TASK_VIEW_BASIC leaves out."""
XLSX_MAX_ROWS = 1_048_576 - 1
"""Excel's sheet limit, less the header row."""


class Exporter:
    """Runs exports against the pool; each batch borrows a connection only briefly."""

    def __init__(
        self, pool: AsyncConnectionPool[Any], to_message: ToMessage, batch: int = BATCH
    ) -> None:
        self._pool = pool
        self._to_message = to_message
        self._batch = batch
        self._bulk = BulkLimiter(pool)

    async def export(
        self,
        parent: str,
        task_filter: task_pb2.TaskFilter,
        file_format: enums_pb2.ExportFormat.ValueType,
        fields: Sequence[str],
        view: enums_pb2.TaskView.ValueType = enums_pb2.TASK_VIEW_UNSPECIFIED,
        *,
        me: str = "",
        to_message: ToMessage | None = None,
    ) -> AsyncIterator[tuple[str, bytes]]:
        """(content type, bytes) chunks; the first chunk always comes, maybe empty.

        TASK_VIEW_BASIC leaves out the input and result columns (and never reads them
        into a message); naming one in `fields` with it is INVALID_ARGUMENT. `me` is the
        calling key's name, which `creators: ["me"]` stands for; `to_message` renders a
        row for this caller (the input redacted) instead of the exporter's own."""
        project = names.parse(parent, "parent").project
        v = Violations()
        query = task_list.parse_filter(v, task_filter, project, me=me)
        columns: list[Column] = []
        try:
            columns = parse_fields(fields)
        except InvalidArgument as error:
            v.items.extend(error.violations)
        basic = view == enums_pb2.TASK_VIEW_BASIC
        if basic:
            large = [c for c in columns if c.fields[0].name in _NOT_BASIC]
            for column in large if fields else ():
                v.add("fields", f"{column.path} is not in TASK_VIEW_BASIC")
            columns = [c for c in columns if c not in large]
        if file_format == enums_pb2.EXPORT_FORMAT_UNSPECIFIED:
            file_format = enums_pb2.EXPORT_FORMAT_CSV
        if file_format not in CONTENT_TYPES:
            v.add("format", f"{file_format} is not an export format")
        v.raise_if_any()
        content_type = CONTENT_TYPES[file_format]
        async with contextlib.AsyncExitStack() as slot:
            if await self._is_bulk(query):
                # A large export is a bulk action: it holds the project's slot while it
                # streams (domain/bulk_actions.py).
                await slot.enter_async_context(self._bulk.hold(project, "ExportTasks"))
            render = to_message or self._to_message
            async for chunk in self._stream(query, columns, file_format, basic, render):
                yield content_type, chunk

    async def _is_bulk(self, query: task_store.TaskQuery) -> bool:
        async with self._pool.connection() as conn:
            counted = await task_store.count_matching(conn, replace(query, limit=BULK_ROWS + 1))
        return counted > BULK_ROWS

    async def _stream(
        self,
        query: task_store.TaskQuery,
        columns: list[Column],
        file_format: enums_pb2.ExportFormat.ValueType,
        basic: bool,
        to_message: ToMessage,
    ) -> AsyncIterator[bytes]:
        query = replace(query, limit=self._batch, order="id")
        cells = Cells(columns, to_message)
        if file_format == enums_pb2.EXPORT_FORMAT_XLSX:
            async for data in self._xlsx(query, columns, cells, basic):
                yield data
            return
        writer = (
            CsvWriter(columns)
            if file_format == enums_pb2.EXPORT_FORMAT_CSV
            else NdjsonWriter(columns)
        )
        first = True
        async for rows in self._batches(query, basic):
            for row in rows:
                writer.add(cells(row))
            data = writer.take()
            if data or first:
                yield data
                first = False
        data = writer.take()
        if data or first:
            yield data

    async def _batches(
        self, query: task_store.TaskQuery, basic: bool
    ) -> AsyncIterator[list[TaskRow]]:
        while True:
            async with self._pool.connection() as conn:
                rows = await task_store.list_page(conn, query)
            if rows:
                yield [replace(r, input=None, result=None) for r in rows] if basic else rows
            if len(rows) < query.limit:
                return
            query = replace(query, after_id=rows[-1].id)

    async def _xlsx(
        self, query: task_store.TaskQuery, columns: list[Column], cells: Cells, basic: bool
    ) -> AsyncIterator[bytes]:
        handle, path = tempfile.mkstemp(prefix="conveyor-export-", suffix=".xlsx")
        os.close(handle)
        try:
            book = XlsxWriter(columns, path)
            try:
                async for rows in self._batches(query, basic):
                    if book.row + len(rows) > XLSX_MAX_ROWS:
                        raise InvalidArgument.of(
                            "format",
                            f"XLSX holds at most {XLSX_MAX_ROWS} tasks; narrow the filter "
                            "or export CSV or NDJSON",
                        )
                    # xlsxwriter is synchronous: keep the event loop free meanwhile.
                    await asyncio.to_thread(book.add_all, [cells(row) for row in rows])
            finally:
                await asyncio.to_thread(book.close)
            file = await asyncio.to_thread(open, path, "rb")
            try:
                while data := await asyncio.to_thread(file.read, CHUNK):
                    yield data
            finally:
                file.close()
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
