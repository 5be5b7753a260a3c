"""Task log lines as an append stores them: an AppendTaskLogsRequest (or an item of a
Connect stream's TaskLogBatch) checked and written as the JSON array that
conveyor_append_task_logs reads (domain/task_logs.py appends it).

At a thousand lines a second per logging task this loop is most of the server's cost of
a log line, so each line's JSON object is written out directly: its fields in one pass
over the Struct (checked, measured and encoded at once), enum members and each second's
time text looked up.
"""

from __future__ import annotations

import json
import math
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from google.protobuf import struct_pb2, timestamp_pb2

from conveyor.client._json import number
from conveyor.server.domain.leases import TaskRef, lease_token, task_ref
from conveyor.server.domain.validate import NUL_RULE
from conveyor.server.errors import Violations
from conveyor.v1 import enums_pb2, task_service_pb2

__all__ = ["MAX_LINES", "MAX_LINE_BYTES", "LogAppend", "parse_append"]

MAX_LINES = 1000
"""Most lines one append (or one item of a TaskLogBatch) carries."""
MAX_LINE_BYTES = 64 * 1024
"""Most bytes of one line: its message and its fields as JSON."""


@dataclass(frozen=True, slots=True)
class LogAppend:
    """One task's lines, checked: their JSON array as the append function reads it."""

    task: TaskRef
    lease_id: uuid.UUID
    lines_json: str


_STREAMS: dict[int, str] = {
    value: f',"stream":"{name.removeprefix("TASK_LOG_STREAM_")}"'
    for name, value in enums_pb2.TaskLogStream.items()
    if value
}
_LEVELS: dict[int, str] = {
    value: f',"level":"{name.removeprefix("TASK_LOG_LEVEL_")}"'
    for name, value in enums_pb2.TaskLogLevel.items()
    if value
}
"""Each known non-zero enum value as its JSON member (0: the column's default)."""
_encode_string = json.encoder.encode_basestring_ascii  # json.dumps of one str, in C


class _Fields:
    """A line's fields as JSON text in one pass over the Struct: what json.dumps of
    from_struct's dict writes (compact, ASCII, integral numbers as integers), noting a
    number that is not finite and a NUL in any key or string on the way."""

    __slots__ = ("nonfinite", "nul")

    def __init__(self) -> None:
        self.nonfinite = False
        self.nul = False

    def struct(self, struct: struct_pb2.Struct) -> str:
        parts = []
        for key, value in struct.fields.items():
            if "\x00" in key:
                self.nul = True
            parts.append(f"{_encode_string(key)}:{self.value(value)}")
        return "{" + ",".join(parts) + "}"

    def value(self, value: struct_pb2.Value) -> str:
        kind = value.WhichOneof("kind")
        if kind == "string_value":
            text = value.string_value
            if "\x00" in text:
                self.nul = True
            return _encode_string(text)
        if kind == "number_value":
            n = value.number_value
            if not math.isfinite(n):
                self.nonfinite = True
                return "null"
            return repr(number(n))  # as json.dumps writes an int or a float
        if kind == "bool_value":
            return "true" if value.bool_value else "false"
        if kind == "list_value":
            return "[" + ",".join(self.value(item) for item in value.list_value.values) + "]"
        if kind == "struct_value":
            return self.struct(value.struct_value)
        return "null"


class _Times:
    """A line's time as ISO 8601 text: the lines of one append mostly share their second,
    so each second is formatted once."""

    def __init__(self) -> None:
        self._seconds: dict[int, str] = {}

    def text(self, time: timestamp_pb2.Timestamp) -> str:
        seconds, nanos = time.seconds, time.nanos
        if not 0 <= nanos < 1_000_000_000:
            return time.ToDatetime(tzinfo=UTC).isoformat()
        prefix = self._seconds.get(seconds)
        if prefix is None:
            prefix = datetime.fromtimestamp(seconds, UTC).isoformat().removesuffix("+00:00")
            self._seconds[seconds] = prefix
        return f"{prefix}.{nanos // 1000:06d}+00:00"


def parse_append(request: task_service_pb2.AppendTaskLogsRequest, prefix: str = "") -> LogAppend:
    """An AppendTaskLogsRequest checked; INVALID_ARGUMENT naming every bad field."""
    ref = task_ref(request.name, f"{prefix}name")
    lease_id = lease_token(request.lease_id, f"{prefix}lease_id")
    v = Violations()
    if not request.lines:
        v.add(f"{prefix}lines", "must hold at least one line")
    elif len(request.lines) > MAX_LINES:
        v.add(f"{prefix}lines", f"at most {MAX_LINES} lines per append")
    out = []
    times = _Times()
    for i, line in enumerate(request.lines[:MAX_LINES]):
        message = line.message
        item = f'{{"message":{_encode_string(message)}'
        size = len(message.encode())
        if "\x00" in message:
            v.add(f"{prefix}lines[{i}].message", NUL_RULE)
        if line.fields.fields:
            fields = _Fields()
            text = fields.struct(line.fields)
            if fields.nonfinite:
                v.add(f"{prefix}lines[{i}].fields", "must hold finite numbers only")
            if fields.nul:
                v.add(f"{prefix}lines[{i}].fields", NUL_RULE)
            size += len(text)  # ASCII: its length is its size in bytes
            item += f',"fields":{text}'
        if size > MAX_LINE_BYTES:
            v.add(
                f"{prefix}lines[{i}].message",
                f"the line (message and fields) is over {MAX_LINE_BYTES} bytes",
            )
        item += f',"size":{size}'
        if line.HasField("time"):
            item += f',"time":"{times.text(line.time)}"'
        if line.stream:
            item += _known(_STREAMS, line.stream, f"{prefix}lines[{i}].stream", v)
        if line.level:
            item += _known(_LEVELS, line.level, f"{prefix}lines[{i}].level", v)
        out.append(item + "}")
    v.raise_if_any()
    return LogAppend(ref, lease_id, f"[{','.join(out)}]")


def _known(spelled: dict[int, str], value: int, path: str, v: Violations) -> str:
    """The JSON member of an enum value (stream, level), or "" and a violation at `path`
    for a number the proto does not define."""
    member = spelled.get(value)
    if member is None:
        v.add(path, f"{value} is not a known value")
        return ""
    return member
