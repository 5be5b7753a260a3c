"""Seed 000 (Enrai): a task as Enrai shows it, and its completion callback payload.

Shared by the seed API (compat/enrai.py) and the webhook dispatcher (loops/webhooks.py),
which sends this payload instead of Conveyor's own for a task created through the
Enrai API (label `compat=enrai`), signed and retried like every webhook:

    {"event": "task.completed", "timestamp": "2026-03-19T18:42:10.000Z",
     "task": {"id": "task-7", "status": "completed", "summary": "...",
              "resume_path": "...", "workdir": "..."}}

docs/compat/000-enrai.md explains each choice.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from conveyor.client._json import from_value
from conveyor.v1 import enums_pb2, task_pb2

__all__ = [
    "COMPAT_LABEL",
    "ENRAI",
    "ID_LABEL",
    "STATUS",
    "callback_payload",
    "enrai_id",
    "enrai_task",
    "is_enrai",
    "status_of",
]

COMPAT_LABEL = "compat"
ENRAI = "enrai"
"""Tasks created through the Enrai API carry the label compat=enrai."""
ID_LABEL = "enrai_id"
"""...and their Enrai id, `task-N` (compat/enrai_ids.py numbers them)."""

S = enums_pb2
STATUS: dict[int, str] = {
    S.TASK_STATE_SCHEDULED: "queued",
    S.TASK_STATE_QUEUED: "queued",
    S.TASK_STATE_AWAITING_APPROVAL: "queued",
    S.TASK_STATE_RUNNING: "running",
    S.TASK_STATE_SUCCEEDED: "completed",
    S.TASK_STATE_FAILED: "failed",
    # Enrai's terminal states are completed, failed and interrupted: a task cancelled
    # before it ran, and one stopped while running, both ended without finishing.
    S.TASK_STATE_CANCELLED: "interrupted",
    S.TASK_STATE_INTERRUPTED: "interrupted",
}
_EVENTS = {
    "task.succeeded": "task.completed",
    "task.failed": "task.failed",
    "task.cancelled": "task.interrupted",
    "task.interrupted": "task.interrupted",
}


def is_enrai(task: task_pb2.Task) -> bool:
    return task.labels.get(COMPAT_LABEL) == ENRAI


def enrai_id(task: task_pb2.Task) -> str:
    """The task's Enrai id: `task-N`, or, for a task made before Enrai ids were
    numbered, its Conveyor id."""
    return task.labels.get(ID_LABEL) or task.name.rsplit("/", 1)[-1]


def status_of(task: task_pb2.Task) -> str:
    return STATUS.get(task.state, "queued")


def _input(task: task_pb2.Task) -> dict[str, Any]:
    value = from_value(task.input) if task.HasField("input") else None
    return value if isinstance(value, dict) else {}


def _time(value: Any) -> str | None:
    if value.seconds == 0 and value.nanos == 0:
        return None
    return _rfc3339(value.ToDatetime(tzinfo=UTC))


def _rfc3339(value: datetime) -> str:
    # Milliseconds and Z, as the seed's example writes them.
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _summary(task: task_pb2.Task, given: dict[str, Any]) -> str:
    text = given.get("text")
    return task.summary or (text if isinstance(text, str) else "")


def enrai_task(task: task_pb2.Task) -> dict[str, Any]:
    """A task as GET /api/enrai/tasks lists it."""
    given = _input(task)
    item: dict[str, Any] = {
        "id": enrai_id(task),
        "status": status_of(task),
        "text": given.get("text", ""),
        "summary": _summary(task, given),
        "resume_path": task.resume_token or None,
        "workdir": given.get("workdir"),
        "rollout": given.get("rollout"),
        "callback_url": task.callback_url or None,
        "instructions": given.get("instructions"),
        "manifest": given.get("manifest"),
        "created_at": _time(task.create_time),
        "started_at": _time(task.start_time),
        "finished_at": _time(task.end_time),
        "error": task.error.message or None,
    }
    return item


def callback_payload(event_type: str, time: datetime, task: task_pb2.Task) -> dict[str, Any]:
    """The completion callback of an Enrai task, exactly the seed's shape."""
    given = _input(task)
    return {
        "event": _EVENTS.get(event_type, f"task.{status_of(task)}"),
        "timestamp": _rfc3339(time),
        "task": {
            "id": enrai_id(task),
            "status": status_of(task),
            "summary": _summary(task, given),
            "resume_path": task.resume_token or None,
            "workdir": given.get("workdir"),
        },
    }
