"""Jinja filters that turn proto values into what a person reads."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from jinja2 import Environment

from conveyor.client._json import message_to_json
from conveyor.v1 import (
    command_pb2,
    enums_pb2,
    schedule_pb2,
    task_pb2,
    task_service_pb2,
    worker_pb2,
)

# Enum value -> short name ("RUNNING"), per enum type, without the type's prefix.
_ENUMS = {
    "state": enums_pb2.TaskState,
    "blocked": enums_pb2.BlockedReason,
    "outcome": enums_pb2.AttemptOutcome,
    "command_status": enums_pb2.CommandStatus,
    "verb": enums_pb2.CommandVerb,
    "schedule_kind": enums_pb2.ScheduleKind,
    "schedule_state": enums_pb2.ScheduleState,
    "overlap": enums_pb2.OverlapPolicy,
    "worker_state": enums_pb2.WorkerState,
}


TERMINAL_STATES = [
    enums_pb2.TASK_STATE_SUCCEEDED,
    enums_pb2.TASK_STATE_FAILED,
    enums_pb2.TASK_STATE_CANCELLED,
    enums_pb2.TASK_STATE_INTERRUPTED,
]


def enum_name(value: int, kind: str) -> str:
    wrapper: Any = _ENUMS.get(kind)
    if wrapper is None:
        return str(value)
    name: str = wrapper.Name(value) if value in wrapper.values() else str(value)
    prefix = _prefix(list(wrapper.keys()))
    return name.removeprefix(prefix)


def _prefix(names: list[str]) -> str:
    first = names[0]
    return first[: first.index("UNSPECIFIED")] if "UNSPECIFIED" in first else ""


def when(value: Timestamp | None) -> str:
    """`2026-12-07 13:05:12Z`, or "" when unset."""
    if value is None or (value.seconds == 0 and value.nanos == 0):
        return ""
    moment = value.ToDatetime(tzinfo=UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%SZ")


def ago(value: Timestamp | None) -> str:
    """`12s ago`, `3m ago`, `in 2h`."""
    if value is None or (value.seconds == 0 and value.nanos == 0):
        return ""
    delta = (datetime.now(UTC) - value.ToDatetime(tzinfo=UTC)).total_seconds()
    text = seconds_text(abs(delta))
    return f"{text} ago" if delta >= 0 else f"in {text}"


def seconds_text(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds // 60:.0f}m {seconds % 60:.0f}s"
    if seconds < 86400:
        return f"{seconds // 3600:.0f}h {seconds % 3600 // 60:.0f}m"
    return f"{seconds // 86400:.0f}d {seconds % 86400 // 3600:.0f}h"


def duration(value: Duration | None) -> str:
    if value is None:
        return ""
    return seconds_text(value.seconds + value.nanos / 1e9)


def to_json(value: Message | None, indent: int | None = 2) -> str:
    """A Value, Struct or any message as JSON ("" when empty)."""
    if value is None or not value.ByteSize():
        return ""
    return json.dumps(message_to_json(value), indent=indent, sort_keys=True)


def lines(value: Message | None) -> str:
    """A Struct as `key: value` lines, the way a progress report reads as output."""
    if value is None or not value.ByteSize():
        return ""
    data = message_to_json(value)
    if not isinstance(data, dict):
        return json.dumps(data)
    return "\n".join(
        f"{k}: {v if isinstance(v, str) else json.dumps(v)}" for k, v in sorted(data.items())
    )


def local(value: Timestamp | None, timezone: str) -> str:
    """A time on a zone's wall clock, e.g. `Tue 12-08 02:30 EST`."""
    if value is None or (value.seconds == 0 and value.nanos == 0):
        return ""
    try:
        zone = ZoneInfo(timezone or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        zone = ZoneInfo("UTC")
    return value.ToDatetime(tzinfo=UTC).astimezone(zone).strftime("%a %m-%d %H:%M %Z")


def log_line(line: task_service_pb2.TaskLogLine) -> str:
    """A task's log line as a console shows it: time, message, fields as key=value."""
    text = line.time.ToDatetime(tzinfo=UTC).strftime("%H:%M:%S") + " " + line.message
    if line.fields.fields:
        data = message_to_json(line.fields)
        text += "  " + " ".join(
            f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in sorted(data.items())
        )
    return text


def log_class(line: task_service_pb2.TaskLogLine) -> str:
    """stderr and warning or error lines stand out."""
    if line.stream == enums_pb2.TASK_LOG_STREAM_STDERR or line.level in (
        enums_pb2.TASK_LOG_LEVEL_WARNING,
        enums_pb2.TASK_LOG_LEVEL_ERROR,
    ):
        return "log-err"
    return "log-debug" if line.level == enums_pb2.TASK_LOG_LEVEL_DEBUG else ""


def register(env: Environment) -> None:
    env.filters.update(
        when=when,
        ago=ago,
        duration=duration,
        to_json=to_json,
        lines=lines,
        log_line=log_line,
        log_class=log_class,
        local=local,
        enum=enum_name,
        seconds=seconds_text,
    )
    env.globals.update(
        TERMINAL={"SUCCEEDED", "FAILED", "CANCELLED", "INTERRUPTED"},
        task_pb2=task_pb2,
        schedule_pb2=schedule_pb2,
        worker_pb2=worker_pb2,
        command_pb2=command_pb2,
    )
