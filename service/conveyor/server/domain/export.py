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
import csv
import io
import json
import os
import tempfile
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import xlsxwriter
from google.protobuf import json_format, timestamp_pb2
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message
from psycopg_pool import AsyncConnectionPool

from conveyor.server.domain import names, task_list
from conveyor.server.domain.errors import InvalidArgument, Violations
from conveyor.server.store import tasks as store
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
"""Tasks read per query: the memory an export holds at once."""
CHUNK = 256 * 1024
"""Bytes per streamed chunk (well under gRPC's 4 MiB message limit)."""
XLSX_MAX_ROWS = 1_048_576 - 1
"""Excel's sheet limit, less the header row."""

DEFAULT_FIELDS = (
    "name",
    "queue",
    "kind",
    "state",
    "priority",
    "attempt",
    "create_time",
    "start_time",
    "end_time",
    "worker",
    "summary",
    "error.message",
)
CONTENT_TYPES = {
    enums_pb2.EXPORT_FORMAT_CSV: "text/csv; charset=utf-8",
    enums_pb2.EXPORT_FORMAT_XLSX: (
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    ),
    enums_pb2.EXPORT_FORMAT_NDJSON: "application/x-ndjson",
}
ToMessage = Callable[[TaskRow], task_pb2.Task]
"""Builds the Task message of a row (the RPC layer's one mapping, handed in)."""
_NOT_EXPORTED = frozenset({"attempts", "blocked_reason"})
_TIMESTAMP = timestamp_pb2.Timestamp.DESCRIPTOR.full_name


def _utc(value: datetime | None) -> datetime | None:
    return value.astimezone(UTC) if value is not None else None


def _error_part(key: str, default: Any, kind: Callable[[Any], Any]) -> Callable[[TaskRow], Any]:
    def get(row: TaskRow) -> Any:
        return kind(row.error.get(key, default)) if row.error else None

    return get


# Cells read straight from the row, for the fields exports use most: building the
# whole Task message per row would take most of an export's time. Each must equal
# what the Task message (task_messages.task_message) gives; a test checks them all.
_FROM_ROW: dict[str, Callable[[TaskRow], Any]] = {
    "name": lambda r: r.name,
    "queue": lambda r: r.queue,
    "kind": lambda r: r.kind,
    "priority": lambda r: r.priority,
    "state": lambda r: f"TASK_STATE_{r.state}",
    "state_reason": lambda r: r.state_reason,
    "labels": lambda r: dict(r.labels),
    "attempt": lambda r: r.attempt,
    "schedule_time": lambda r: _utc(r.schedule_time),
    "concurrency_key": lambda r: r.concurrency_key or "",
    "concurrency_limit": lambda r: r.concurrency_limit,
    "requires_approval": lambda r: r.requires_approval,
    "correlation_id": lambda r: r.correlation_id,
    "parent_task": lambda r: f"projects/{r.project}/tasks/{r.parent_task}" if r.parent_task else "",
    "root_task": lambda r: f"projects/{r.project}/tasks/{r.root_task}",
    "callback_url": lambda r: r.callback_url,
    "resume_token": lambda r: r.resume_token,
    "summary": lambda r: r.summary,
    "error.type": _error_part("type", "", str),
    "error.message": _error_part("message", "", str),
    "error.retryable": _error_part("retryable", False, bool),
    "worker": lambda r: f"projects/{r.project}/workers/{r.worker}" if r.worker else "",
    "lease_expire_time": lambda r: _utc(r.lease_expire_time),
    "schedule": lambda r: r.schedule,
    "create_time": lambda r: _utc(r.create_time),
    "start_time": lambda r: _utc(r.start_time),
    "end_time": lambda r: _utc(r.end_time),
    "update_time": lambda r: _utc(r.update_time),
    "cancel_requested": lambda r: r.cancel_requested,
}


@dataclass(frozen=True)
class Column:
    """One exported field: its path as shown in the header and its descriptors."""

    path: str
    fields: tuple[FieldDescriptor, ...]

    @property
    def from_row(self) -> Callable[[TaskRow], Any] | None:
        """A faster way to the same cell, straight from the row, when there is one."""
        return _FROM_ROW.get(self.path)

    def value(self, task: Message) -> Any:
        """The cell: None, a JSON value, or a datetime for a Timestamp."""
        message = task
        for field in self.fields[:-1]:
            if not message.HasField(field.name):
                return None
            message = getattr(message, field.name)
        leaf = self.fields[-1]
        value = getattr(message, leaf.name)
        if leaf.type == FieldDescriptor.TYPE_MESSAGE and not leaf.is_repeated:
            if not message.HasField(leaf.name):
                return None
            if _message_of(leaf).full_name == _TIMESTAMP:
                return value.ToDatetime(tzinfo=UTC)
            return _to_dict(value)
        if leaf.type == FieldDescriptor.TYPE_ENUM and not leaf.is_repeated:
            return _enum_of(leaf).values_by_number[value].name
        if leaf.is_repeated:
            if leaf.type != FieldDescriptor.TYPE_MESSAGE:
                return list(value)
            if _message_of(leaf).GetOptions().map_entry:
                if _message_of(leaf).fields_by_name["value"].type != FieldDescriptor.TYPE_MESSAGE:
                    return dict(value)
                return {key: _to_dict(item) for key, item in value.items()}
            return [_to_dict(item) for item in value]
        return value


def _message_of(field: FieldDescriptor) -> Descriptor:
    assert field.message_type is not None
    return field.message_type


def _enum_of(field: FieldDescriptor) -> EnumDescriptor:
    assert field.enum_type is not None
    return field.enum_type


def _to_dict(message: Message) -> Any:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


class _Cells:
    """The cells of one row for the columns, building the Task message only if needed."""

    def __init__(self, columns: Sequence[Column], to_message: ToMessage) -> None:
        self._getters = [(c.from_row, c) for c in columns]
        self._to_message = to_message
        self._needs_message = any(c.from_row is None for c in columns)

    def __call__(self, row: TaskRow) -> list[Any]:
        task = self._to_message(row) if self._needs_message else None
        return [
            get(row) if get is not None else column.value(task)  # type: ignore[arg-type]
            for get, column in self._getters
        ]


def _find(descriptor: Any, name: str) -> FieldDescriptor | None:
    field: FieldDescriptor | None = descriptor.fields_by_name.get(name)
    if field is None:
        field = next((f for f in descriptor.fields if f.json_name == name), None)
    return field


def parse_fields(paths: Sequence[str]) -> list[Column]:
    """The columns for `fields` (DEFAULT_FIELDS when empty); raises InvalidArgument."""
    v = Violations()
    columns: list[Column] = []
    for path in paths or DEFAULT_FIELDS:
        descriptor: Any = task_pb2.Task.DESCRIPTOR
        found: list[FieldDescriptor] = []
        problem = ""
        for part in path.split("."):
            if descriptor is None:
                problem = f"{'.'.join(f.name for f in found)} has no fields"
                break
            field = _find(descriptor, part)
            if field is None:
                problem = f"{path!r} is not a Task field"
                break
            found.append(field)
            is_message = field.type == FieldDescriptor.TYPE_MESSAGE and not field.is_repeated
            plain = is_message and not _message_of(field).full_name.startswith("google.")
            descriptor = _message_of(field) if plain else None
        if not problem and found and found[0].name in _NOT_EXPORTED:
            problem = f"{found[0].name} cannot be exported"
        if problem:
            v.add("fields", problem)
            continue
        column = Column(".".join(f.name for f in found), tuple(found))
        if any(c.path == column.path for c in columns):
            v.add("fields", f"{column.path} is listed twice")
            continue
        columns.append(column)
    v.raise_if_any()
    return columns


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return _rfc3339(value)
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return str(value)


def _rfc3339(value: datetime) -> str:
    """As proto3 JSON writes a Timestamp: UTC, `Z`, 0, 3 or 6 fraction digits."""
    value = value.astimezone(UTC)
    micros = value.microsecond
    if micros == 0:
        spec = "seconds"
    elif micros % 1000 == 0:
        spec = "milliseconds"
    else:
        spec = "microseconds"
    return value.replace(tzinfo=None).isoformat(timespec=spec) + "Z"


def _json_value(value: Any) -> Any:
    return _rfc3339(value) if isinstance(value, datetime) else value


class _Csv:
    def __init__(self, columns: Sequence[Column]) -> None:
        self.buffer = io.StringIO()
        self.writer = csv.writer(self.buffer, lineterminator="\r\n")
        self.writer.writerow([c.path for c in columns])

    def add(self, cells: list[Any]) -> None:
        self.writer.writerow([_text(cell) for cell in cells])

    def take(self) -> bytes:
        data = self.buffer.getvalue().encode()
        self.buffer.seek(0)
        self.buffer.truncate()
        return data


class _Ndjson:
    def __init__(self, columns: Sequence[Column]) -> None:
        self.paths = [[f.name for f in c.fields] for c in columns]
        self.lines: list[str] = []

    def add(self, cells: list[Any]) -> None:
        record: dict[str, Any] = {}
        for path, cell in zip(self.paths, cells, strict=True):
            node = record
            for name in path[:-1]:
                node = node.setdefault(name, {})
            node[path[-1]] = _json_value(cell)
        self.lines.append(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")

    def take(self) -> bytes:
        data = "".join(self.lines).encode()
        self.lines.clear()
        return data


class _Xlsx:
    """A workbook written row by row to a temporary file (constant memory)."""

    def __init__(self, columns: Sequence[Column], path: str) -> None:
        self.workbook = xlsxwriter.Workbook(
            path,
            {
                "constant_memory": True,
                # Task text is data: never turn it into formulas, links or numbers.
                "strings_to_formulas": False,
                "strings_to_urls": False,
                "strings_to_numbers": False,
                "remove_timezone": True,
            },
        )
        self.sheet = self.workbook.add_worksheet("tasks")
        self.date = self.workbook.add_format({"num_format": "yyyy-mm-dd hh:mm:ss.000"})
        bold = self.workbook.add_format({"bold": True})
        self.sheet.write_row(0, 0, [c.path for c in columns], bold)
        self.row = 0

    def add_all(self, rows: Sequence[list[Any]]) -> None:
        for cells in rows:
            self.row += 1
            for index, value in enumerate(cells):
                if value is None:
                    continue
                if isinstance(value, datetime):
                    self.sheet.write_datetime(self.row, index, value, self.date)
                elif isinstance(value, bool):
                    self.sheet.write_boolean(self.row, index, value)
                elif isinstance(value, int | float):
                    self.sheet.write_number(self.row, index, value)
                else:
                    self.sheet.write_string(self.row, index, _text(value))

    def close(self) -> None:
        self.workbook.close()


class Exporter:
    """Runs exports against the pool; each batch borrows a connection only briefly."""

    def __init__(
        self, pool: AsyncConnectionPool[Any], to_message: ToMessage, batch: int = BATCH
    ) -> None:
        self._pool = pool
        self._to_message = to_message
        self._batch = batch

    async def export(
        self,
        parent: str,
        task_filter: task_pb2.TaskFilter,
        file_format: enums_pb2.ExportFormat.ValueType,
        fields: Sequence[str],
    ) -> AsyncIterator[tuple[str, bytes]]:
        """(content type, bytes) chunks; the first chunk always comes, maybe empty."""
        project = names.parse(parent, "parent").project
        v = Violations()
        query = task_list.parse_filter(v, task_filter, project)
        columns: list[Column] = []
        try:
            columns = parse_fields(fields)
        except InvalidArgument as error:
            v.items.extend(error.violations)
        if file_format == enums_pb2.EXPORT_FORMAT_UNSPECIFIED:
            file_format = enums_pb2.EXPORT_FORMAT_CSV
        if file_format not in CONTENT_TYPES:
            v.add("format", f"{file_format} is not an export format")
        v.raise_if_any()
        content_type = CONTENT_TYPES[file_format]
        query = replace(query, limit=self._batch, order="id")
        if file_format == enums_pb2.EXPORT_FORMAT_XLSX:
            async for data in self._xlsx(query, columns, _Cells(columns, self._to_message)):
                yield content_type, data
            return
        cells = _Cells(columns, self._to_message)
        writer = _Csv(columns) if file_format == enums_pb2.EXPORT_FORMAT_CSV else _Ndjson(columns)
        first = True
        async for rows in self._batches(query):
            for row in rows:
                writer.add(cells(row))
            data = writer.take()
            if data or first:
                yield content_type, data
                first = False
        data = writer.take()
        if data or first:
            yield content_type, data

    async def _batches(self, query: store.TaskQuery) -> AsyncIterator[list[TaskRow]]:
        while True:
            async with self._pool.connection() as conn:
                rows = await store.list_page(conn, query)
            if rows:
                yield rows
            if len(rows) < query.limit:
                return
            query = replace(query, after_id=rows[-1].id)

    async def _xlsx(
        self, query: store.TaskQuery, columns: list[Column], cells: _Cells
    ) -> AsyncIterator[bytes]:
        handle, path = tempfile.mkstemp(prefix="conveyor-export-", suffix=".xlsx")
        os.close(handle)
        try:
            book = _Xlsx(columns, path)
            try:
                async for rows in self._batches(query):
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
