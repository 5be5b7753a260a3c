"""The export file formats: CSV and NDJSON written batch by batch, XLSX row by row to a
temporary file. Cells: timestamps RFC 3339 (real date cells in XLSX), JSON values and
maps as compact JSON (nested objects in NDJSON), unset message fields empty."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import xlsxwriter

from conveyor.server.domain.export_columns import Column
from conveyor.v1 import enums_pb2

__all__ = ["CONTENT_TYPES", "CsvWriter", "NdjsonWriter", "XlsxWriter"]

CONTENT_TYPES = {
    enums_pb2.EXPORT_FORMAT_CSV: "text/csv; charset=utf-8",
    enums_pb2.EXPORT_FORMAT_XLSX: (
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    ),
    enums_pb2.EXPORT_FORMAT_NDJSON: "application/x-ndjson",
}


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


class CsvWriter:
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


class NdjsonWriter:
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


class XlsxWriter:
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
