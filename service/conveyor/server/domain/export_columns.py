"""The columns of a task export: `fields` parsed into Task field paths, and each row's
cells (read straight from the row for the common fields, else from the Task message)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from google.protobuf import timestamp_pb2
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message

from conveyor.client._json import message_to_json
from conveyor.server.errors import Violations
from conveyor.server.store.task_rows import TaskRow
from conveyor.v1 import task_pb2

__all__ = ["DEFAULT_FIELDS", "Cells", "Column", "ToMessage", "parse_fields"]

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
# what the Task message (render.tasks.task_message) gives; a test checks them all.
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
    return message_to_json(message, preserving_proto_field_name=True)


class Cells:
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
