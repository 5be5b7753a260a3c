"""Printing results: a table on a terminal, else JSON; `-o json|yaml|wide|table` anywhere.

One object prints as itself (a field/value table on a terminal); a list prints as one
JSON array (`-o json`), one YAML list, or a table with a row per item; a stream
(`watch`) prints one JSON object per line (NDJSON), or one table row per line on a
terminal. `-o name` prints only resource names, one a line (`TASK=$(conveyor tasks
create k -o name)`). Messages become the proto JSON mapping with proto field names, and integral
numbers inside Struct/Value fields print as integers (protobuf keeps them as doubles).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import yaml
from google.protobuf.message import Message
from rich.console import Console
from rich.table import Table

from conveyor.client._json import integral, message_to_json
from conveyor.client.cli._session import session


def to_data(item: Message | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(item, Message):
        # As the REST gateway answers: scalars, lists and maps always present.
        data: dict[str, Any] = message_to_json(
            item, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )
        return data
    fixed: dict[str, Any] = integral(dict(item))
    return fixed


def _enum(prefix: str) -> Callable[[Any], str]:
    def short(value: Any) -> str:
        text = str(value or "")
        return "" if text.endswith("_UNSPECIFIED") else text.removeprefix(prefix)

    return short


def _short(value: Any) -> str:
    """The last segment of a resource name."""
    return str(value or "").rsplit("/", 1)[-1]


def _joined(value: Any) -> str:
    return ",".join(str(v) for v in value or ())


def _labels(value: Any) -> str:
    return ",".join(f"{k}={v}" for k, v in (value or {}).items())


def _compact(value: Any) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"))


Column = tuple[str, str, Callable[[Any], str], bool]
"""(header, dotted path in the data, formatter, wide only)."""

_TASK_STATE = _enum("TASK_STATE_")

COLUMNS: dict[str, list[Column]] = {
    "task": [
        ("ID", "name", _short, False),
        ("KIND", "kind", str, False),
        ("QUEUE", "queue", str, False),
        ("STATE", "state", _TASK_STATE, False),
        ("BLOCKED", "blocked_reason", _enum("BLOCKED_REASON_"), True),
        ("PRIORITY", "priority", str, True),
        ("ATTEMPT", "attempt", str, False),
        ("WORKER", "worker", _short, True),
        ("LABELS", "labels", _labels, True),
        ("SUMMARY", "summary", str, False),
        ("CREATED", "create_time", str, False),
    ],
    "queue": [
        ("QUEUE", "name", _short, False),
        ("PAUSED", "paused", lambda v: "yes" if v else "", False),
        ("QUEUED", "stats.queued", str, False),
        ("RUNNING", "stats.running", str, False),
        ("AWAITING", "stats.awaiting_approval", str, False),
        ("SCHEDULED", "stats.scheduled", str, True),
        ("OLDEST", "stats.oldest_queued_age", str, False),
        ("MAX CONC", "max_concurrency", str, True),
        ("RATE", "rate_limit", str, True),
        ("OK 1H", "stats.succeeded_last_hour", str, True),
        ("FAILED 1H", "stats.failed_last_hour", str, True),
    ],
    "worker": [
        ("WORKER", "name", _short, False),
        ("STATE", "state", _enum("WORKER_STATE_"), False),
        ("QUEUES", "queues", _joined, False),
        ("CAPACITY", "capacity", str, False),
        ("ACTIVE", "active_tasks", lambda v: str(len(v or ())), False),
        ("LAST SEEN", "last_seen_time", str, False),
        ("SDK", "sdk_version", str, True),
        ("LABELS", "labels", _labels, True),
    ],
    "schedule": [
        ("SCHEDULE", "name", _short, False),
        ("TITLE", "title", str, False),
        ("STATE", "state", _enum("SCHEDULE_STATE_"), False),
        ("KIND", "spec.kind", _enum("SCHEDULE_KIND_"), False),
        ("EXPRESSION", "spec.expression", str, False),
        ("TZ", "spec.timezone", str, True),
        ("TASK", "task_template.kind", str, True),
        ("NEXT RUN", "next_run_time", str, False),
        ("RUNS", "run_count", str, True),
    ],
    "event": [
        ("ID", "id", str, False),
        ("TYPE", "type", str, False),
        ("TIME", "time", str, False),
        ("SUBJECT", "subject", str, False),
        ("STATE", "task.state", _TASK_STATE, True),
        ("DATA", "data", _compact, True),
    ],
    "task_log": [
        ("TIME", "time", str, False),
        ("ATTEMPT", "attempt", str, True),
        ("SEQ", "seq", str, True),
        ("STREAM", "stream", _enum("TASK_LOG_STREAM_"), False),
        ("LEVEL", "level", _enum("TASK_LOG_LEVEL_"), False),
        ("MESSAGE", "message", str, False),
        ("FIELDS", "fields", _compact, False),
    ],
    "command": [
        ("SEQ", "sequence", str, False),
        ("VERB", "verb", _enum("COMMAND_VERB_"), False),
        ("TARGET", "target", str, False),
        ("STATUS", "status", _enum("COMMAND_STATUS_"), False),
        ("BY", "issued_by", _short, True),
        ("RESULT", "result", _compact, True),
        ("CREATED", "create_time", str, False),
    ],
    "project": [
        ("PROJECT", "name", _short, False),
        ("DISPLAY NAME", "display_name", str, False),
        ("CALLBACK URL", "callback_url", str, True),
        ("CREATED", "create_time", str, False),
    ],
    "api_key": [
        ("KEY", "name", _short, False),
        ("ROLE", "role", _enum("ROLE_"), False),
        ("DISPLAY NAME", "display_name", str, False),
        ("LAST USED", "last_used_time", str, True),
        ("CREATED", "create_time", str, False),
    ],
}


def _lookup(data: Mapping[str, Any], path: str) -> Any:
    value: Any = data
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def _cell(data: Mapping[str, Any], column: Column) -> str:
    value = _lookup(data, column[1])
    return "" if value is None else column[2](value)


class Output:
    """Prints what one command returns, in the session's format."""

    def __init__(self, fmt: str | None = None) -> None:
        chosen = (fmt or session().output or "").lower()
        self.format = chosen or ("table" if sys.stdout.isatty() else "json")
        # Piped tables keep one line per row (no terminal width to fold them to).
        width = None if sys.stdout.isatty() else 4096
        self.console = Console(soft_wrap=False, width=width)

    @property
    def tabular(self) -> bool:
        return self.format in ("table", "wide")

    def _write(self, text: str) -> None:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        sys.stdout.flush()

    def _print(self, table: Table) -> None:
        if sys.stdout.isatty():
            self.console.print(table)
            return
        with self.console.capture() as captured:
            self.console.print(table)
        self._write("\n".join(line.rstrip() for line in captured.get().splitlines()))

    def one(self, item: Message | Mapping[str, Any]) -> None:
        data = to_data(item)
        if self.format == "name":
            self._write(str(data.get("name", "")))
        elif self.format == "json":
            self._write(json.dumps(data, indent=2))
        elif self.format == "yaml":
            self._write(yaml.safe_dump(data, sort_keys=False))
        else:
            table = Table(show_header=False, box=None, pad_edge=False)
            table.add_column(style="bold")
            table.add_column(overflow="fold")
            for key, value in data.items():
                if value not in ("", [], {}, None):
                    table.add_row(key, _compact(value))
            self._print(table)

    def many(self, items: Iterable[Message | Mapping[str, Any]], kind: str) -> None:
        rows = [to_data(item) for item in items]
        if self.format == "name":
            if rows:
                self._write("\n".join(str(row.get("name", "")) for row in rows))
        elif self.format == "json":
            self._write(json.dumps(rows, indent=2))
        elif self.format == "yaml":
            self._write(yaml.safe_dump(rows, sort_keys=False) if rows else "[]")
        else:
            self._print(self._table(rows, kind))

    def _columns(self, kind: str, rows: Sequence[Mapping[str, Any]]) -> list[Column]:
        known = COLUMNS.get(kind)
        if known is None:
            # Unknown shapes: one column per top-level field of the first row.
            keys = list(rows[0]) if rows else []
            return [(k.upper(), k, _compact, False) for k in keys]
        return [c for c in known if self.format == "wide" or not c[3]]

    def _table(self, rows: Sequence[Mapping[str, Any]], kind: str) -> Table:
        table = Table(box=None, pad_edge=False, header_style="bold")
        columns = self._columns(kind, rows)
        for column in columns:
            table.add_column(column[0], overflow="fold")
        for row in rows:
            table.add_row(*(_cell(row, column) for column in columns))
        return table

    def stream_item(self, item: Message | Mapping[str, Any], kind: str) -> None:
        """One item of a stream: an NDJSON line, or a table row of its own."""
        data = to_data(item)
        if self.tabular:
            columns = self._columns(kind, [data])
            self._write("  ".join(_cell(data, c) for c in columns))
        elif self.format == "yaml":
            self._write(yaml.safe_dump([data], sort_keys=False))
        elif self.format == "name":
            self._write(str(data.get("name") or data.get("id", "")))
        else:
            self._write(json.dumps(data, separators=(",", ":")))


def note(message: str) -> None:
    """Progress and remarks, on stderr, so stdout stays parseable."""
    sys.stderr.write(message + "\n")
    sys.stderr.flush()
