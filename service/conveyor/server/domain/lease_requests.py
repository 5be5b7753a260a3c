"""What a worker's request names: a task, its lease_id, a lease duration, queues.

Each is checked on its own, before anything is read: a bad one is INVALID_ARGUMENT
naming its field.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from conveyor.server.domain import names
from conveyor.server.errors import InvalidArgument, Violations

MIN_LEASE_MS = 1_000
MAX_LEASE_MS = 24 * 3600 * 1000
MAX_QUEUES = 100


@dataclass(frozen=True, slots=True)
class TaskRef:
    project: str
    id: uuid.UUID

    @property
    def name(self) -> str:
        return f"projects/{self.project}/tasks/{self.id}"


def task_ref(value: str, field_path: str) -> TaskRef:
    """A task name `projects/{project}/tasks/{uuid}`; INVALID_ARGUMENT for anything else."""
    parts = value.split("/")
    if not value:
        raise InvalidArgument.of(field_path, "is required")
    if (
        len(parts) == 4
        and parts[0] == "projects"
        and parts[2] == "tasks"
        and names.ID_RE.match(parts[1])
    ):
        try:
            return TaskRef(parts[1], uuid.UUID(parts[3]))
        except ValueError:
            pass
    raise InvalidArgument.of(field_path, "must be a task name projects/{project}/tasks/{task}")


def lease_token(value: str, field_path: str) -> uuid.UUID:
    if not value:
        raise InvalidArgument.of(field_path, "is required")
    try:
        return uuid.UUID(value)
    except ValueError:
        raise InvalidArgument.of(field_path, "is not a lease_id this service issued") from None


def lease_ms(v: Violations, seconds: int, nanos: int, field_path: str) -> int | None:
    """Milliseconds of a set lease duration, checked against the bounds."""
    if seconds < 0 or nanos < 0:
        v.add(field_path, "must be a positive duration")
        return None
    ms = seconds * 1000 + nanos // 1_000_000
    if not MIN_LEASE_MS <= ms <= MAX_LEASE_MS:
        v.add(field_path, "must be between 1s and 24h")
        return None
    return ms


def check_queues(v: Violations, queues: Sequence[str], field_path: str) -> None:
    if not queues:
        v.add(field_path, "must name at least one queue")
    elif len(queues) > MAX_QUEUES:
        v.add(field_path, f"at most {MAX_QUEUES} queues")
    for i, queue in enumerate(queues):
        names.check_queue(v, queue, f"{field_path}[{i}]")
