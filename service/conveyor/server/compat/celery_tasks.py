"""Seed 001, the Celery admin API ("brain"): its task reads as v1 requests, and v1 tasks
as its TaskPublic. Pure mapping, no I/O; docs/compat/001-celery-brain.md explains each
choice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from conveyor.server.compat.body import Fields, check, comma_list, page_of, rfc3339, timestamp_of
from conveyor.server.errors import Violations
from conveyor.server.gateway.jsonform import to_json
from conveyor.v1 import enums_pb2, task_pb2, task_service_pb2

__all__ = [
    "ENGINE",
    "EXPORT_FORMATS",
    "FIELD_PATHS",
    "PRIORITY_BANDS",
    "STATES",
    "bulk_delete_request",
    "export_request",
    "fields_of",
    "format_of",
    "list_request",
    "priority_name",
    "project_fields",
    "project_of",
    "state_name",
    "states_asked",
    "task_name",
    "task_public",
    "tree_public",
    "with_kwargs",
]

ENGINE = "celery"
"""The one engine this API fronts: Conveyor plays Celery's part (see the mapping doc)."""

_T = enums_pb2
STATES: dict[str, tuple[enums_pb2.TaskState.ValueType, ...]] = {
    # Celery's RECEIVED: accepted, not running yet (ready, waiting for its ETA or for
    # approval).
    "received": (_T.TASK_STATE_QUEUED, _T.TASK_STATE_SCHEDULED, _T.TASK_STATE_AWAITING_APPROVAL),
    "started": (_T.TASK_STATE_RUNNING,),
    "succeeded": (_T.TASK_STATE_SUCCEEDED,),
    "failed": (_T.TASK_STATE_FAILED,),
    "cancelled": (_T.TASK_STATE_CANCELLED,),
    # Celery's RETRY: failed, waiting for its next attempt (SCHEDULED after a backoff).
    "retried": (_T.TASK_STATE_SCHEDULED,),
    # A lease lost (or a running task stopped) with no attempts left.
    "lost": (_T.TASK_STATE_INTERRUPTED,),
}
PRIORITY_BANDS: dict[str, tuple[str, ...]] = {
    "critical": ("1", "2"),
    "high": ("3", "4"),
    "normal": ("5", "6"),
    "low": ("7", "8", "9"),
}
"""The brain's priority names and the 1..9 priorities each stands for."""
EXPORT_FORMATS: dict[str, enums_pb2.ExportFormat.ValueType] = {
    "csv": _T.EXPORT_FORMAT_CSV,
    "xlsx": _T.EXPORT_FORMAT_XLSX,
}
"""`format` values that stream a file; `json` (and none) is the paginated JSON page."""

# The seed's TaskPublic field -> the v1 Task field path, for `fields` (export columns).
FIELD_PATHS: dict[str, str] = {
    "id": "name",
    "task_id": "name",
    "name": "kind",
    "queue": "queue",
    "state": "state",
    "priority": "priority",
    "args": "input",
    "kwargs": "input",
    "result": "result",
    "exception": "error.message",
    "traceback": "error.details",
    "retry_count": "attempt",
    "eta": "schedule_time",
    "received_at": "create_time",
    "started_at": "start_time",
    "finished_at": "end_time",
    "runtime_ms": "run_duration",
    "worker_name": "worker",
    "parent_task_id": "parent_task",
    "root_task_id": "root_task",
    "tags": "labels",
    "created_at": "create_time",
    "updated_at": "update_time",
}
_PUBLIC_ONLY = {"project_id", "engine"}
"""TaskPublic fields with no v1 column (constant per request); skipped in exports."""


def project_of(slug: str) -> str:
    """The brain's `{slug}` is the project id."""
    return f"projects/{slug}"


def task_name(slug: str, task_id: str) -> str:
    return f"projects/{slug}/tasks/{task_id}"


def _filter(q: Mapping[str, list[str]], v: Violations) -> task_pb2.TaskFilter:
    found = task_pb2.TaskFilter()
    for state in comma_list(q.get("state", [])):
        states = STATES.get(state.lower())
        if states is None:
            v.add("state", f"{state!r} is not one of {', '.join(STATES)}")
        else:
            found.states.extend(s for s in states if s not in found.states)
    for priority in comma_list(q.get("priority", [])):
        # A name stands for its band (as priority_name renders it); anything else
        # (1..9, or a typo) is v1's to read or refuse.
        found.priorities.extend(PRIORITY_BANDS.get(priority.lower(), (priority,)))
    found.kinds.extend(q.get("name", [])[-1:])
    found.queues.extend(q.get("queue", [])[-1:])
    found.workers.extend(q.get("worker", [])[-1:])
    if q.get("search"):
        found.search = q["search"][-1]
    for key, field in (("since", "create_time_after"), ("until", "create_time_before")):
        if q.get(key):
            stamp = timestamp_of(v, key, q[key][-1])
            if stamp is not None:
                getattr(found, field).CopyFrom(stamp)
    return found


def _one(q: Mapping[str, list[str]], key: str) -> str:
    values = q.get(key, [])
    return values[-1] if values else ""


def fields_of(q: Mapping[str, list[str]], v: Violations) -> list[str]:
    """The `fields` projection, in order, each a TaskPublic field."""
    fields = comma_list(q.get("fields", []))
    for name in fields:
        if name not in FIELD_PATHS and name not in _PUBLIC_ONLY:
            v.add("fields", f"{name!r} is not a task field")
    return fields


def list_request(slug: str, q: Mapping[str, list[str]]) -> task_service_pb2.ListTasksRequest:
    """GET .../tasks in JSON mode -> ListTasks (the cursor is v1's page token)."""
    v = Violations()
    request = task_service_pb2.ListTasksRequest(parent=project_of(slug), filter=_filter(q, v))
    request.page_token, request.page_size = page_of(v, q)
    fields_of(q, v)
    check(v)
    return request


def export_request(
    slug: str, q: Mapping[str, list[str]], file_format: enums_pb2.ExportFormat.ValueType
) -> task_service_pb2.ExportTasksRequest:
    """GET .../tasks?format=csv|xlsx -> ExportTasks over the same filter, all pages."""
    v = Violations()
    request = task_service_pb2.ExportTasksRequest(
        parent=project_of(slug), filter=_filter(q, v), format=file_format
    )
    paths: list[str] = []
    for name in fields_of(q, v):
        path = FIELD_PATHS.get(name)
        if path is not None and path not in paths:
            paths.append(path)
    request.fields.extend(paths)
    check(v)
    return request


def format_of(q: Mapping[str, list[str]]) -> enums_pb2.ExportFormat.ValueType | None:
    """The export format, or None for JSON mode; raises on an unknown value."""
    value = _one(q, "format").lower()
    if value in ("", "json"):
        return None
    if value not in EXPORT_FORMATS:
        v = Violations()
        v.add("format", f"{value!r} is not csv, xlsx or json")
        check(v)
    return EXPORT_FORMATS[value]


def bulk_delete_request(
    slug: str, body: Mapping[str, Any]
) -> tuple[list[str], task_pb2.TaskFilter | None]:
    """The bulk-delete body: the task names and/or the filter it names.

    Both may be given (the seed's own example does): the handler then deletes the
    named tasks that the filter also matches.
    """
    f = Fields(body)
    v = f.violations
    names = [task_name(slug, task_id) for task_id in f.strings("task_ids")]
    found = task_pb2.TaskFilter()
    state = f.text("filter_state")
    if state:
        states = STATES.get(state.lower())
        if states is None:
            v.add("filter_state", f"{state!r} is not one of {', '.join(STATES)}")
        else:
            found.states.extend(states)
    if f.text("filter_name"):
        found.kinds.append(f.text("filter_name"))
    if f.text("filter_queue"):
        found.queues.append(f.text("filter_queue"))
    bounds = (("filter_since", "create_time_after"), ("filter_until", "create_time_before"))
    for key, field in bounds:
        stamp = f.timestamp(key)
        if stamp is not None:
            getattr(found, field).CopyFrom(stamp)
    if not names and found.ByteSize() == 0:
        v.add("task_ids", "give task_ids or at least one filter_* field")
    check(v)
    return names, (found if found.ByteSize() else None)


def states_asked(q: Mapping[str, list[str]]) -> set[str]:
    """The brain states a `state` query names (empty: any). v1 filters on its states;
    received and retried share SCHEDULED, so a page is narrowed to the names asked."""
    return {state.lower() for state in comma_list(q.get("state", [])) if state.lower() in STATES}


def state_name(task: task_pb2.Task) -> str:
    if task.state == _T.TASK_STATE_SCHEDULED and task.attempt > 0:
        return "retried"
    for name, states in STATES.items():
        if task.state in states:
            return name
    return "received"


def priority_name(priority: int) -> str:
    """1..9 -> the brain's name of its band (PRIORITY_BANDS)."""
    for name, band in PRIORITY_BANDS.items():
        if str(priority) in band:
            return name
    return "normal"


def _args_kwargs(task: task_pb2.Task) -> tuple[list[Any], dict[str, Any]]:
    """Celery's (args, kwargs) from the task's input: a list is args, an object is
    kwargs, an object of exactly `args` and/or `kwargs` is both, anything else one arg."""
    if not task.HasField("input"):
        return [], {}
    data = to_json(task.input)
    if isinstance(data, list):
        return data, {}
    if isinstance(data, dict):
        if data and set(data) <= {"args", "kwargs"}:
            args, kwargs = data.get("args", []), data.get("kwargs", {})
            if isinstance(args, list) and isinstance(kwargs, dict):
                return args, kwargs
        return [], data
    return [data], {}


def with_kwargs(task: task_pb2.Task, kwargs: dict[str, Any]) -> Any:
    """The input of a retry with `override_kwargs`: the task's args kept, its kwargs
    replaced (an input that is all kwargs is replaced whole)."""
    args, _ = _args_kwargs(task)
    return {"args": args, "kwargs": kwargs} if args else kwargs


def _id(name: str) -> str | None:
    return name.rsplit("/", 1)[-1] if name else None


def task_public(task: task_pb2.Task, slug: str) -> dict[str, Any]:
    """A v1 Task as the brain's TaskPublic."""
    args, kwargs = _args_kwargs(task)
    task_id = _id(task.name)
    error = task.error if task.HasField("error") else None
    exception = None
    traceback = None
    if error is not None:
        exception = f"{error.type}: {error.message}" if error.type else error.message
        details = to_json(error.details) if error.HasField("details") else {}
        if isinstance(details.get("traceback"), str):
            traceback = details["traceback"]
    runtime_ms = None
    if task.HasField("run_duration"):
        runtime_ms = task.run_duration.ToMilliseconds()
    root = _id(task.root_task)
    eta = rfc3339(task, "schedule_time")
    if (
        eta is not None
        and task.HasField("create_time")
        and task.schedule_time.ToNanoseconds() <= (task.create_time.ToNanoseconds())
    ):
        eta = None  # "not before now" is no ETA
    return {
        "id": task_id,
        "project_id": slug,
        "engine": ENGINE,
        "task_id": task_id,
        "name": task.kind,
        "queue": task.queue,
        "state": state_name(task),
        "priority": priority_name(task.priority),
        "args": args,
        "kwargs": kwargs,
        "result": to_json(task.result) if task.HasField("result") else None,
        "exception": exception,
        "traceback": traceback,
        "retry_count": max(task.attempt - 1, 0),
        "eta": eta,
        "received_at": rfc3339(task, "create_time"),
        "started_at": rfc3339(task, "start_time"),
        "finished_at": rfc3339(task, "end_time"),
        "runtime_ms": runtime_ms,
        "worker_name": _id(task.worker),
        "parent_task_id": _id(task.parent_task),
        "root_task_id": None if root == task_id else root,
        "tags": [f"{k}={v}" for k, v in sorted(task.labels.items())],
        "created_at": rfc3339(task, "create_time"),
        "updated_at": rfc3339(task, "update_time"),
    }


def project_fields(item: dict[str, Any], fields: Sequence[str]) -> dict[str, Any]:
    """The `fields` projection of a TaskPublic (all fields when none are named)."""
    if not fields:
        return item
    return {name: item[name] for name in fields if name in item}


def tree_public(tree: task_service_pb2.TaskTree, slug: str) -> dict[str, Any]:
    """GetTaskTree -> every task sharing the root, with the cap's `truncated` flag."""
    return {
        "items": [task_public(task, slug) for task in tree.tasks],
        "truncated": tree.truncated,
    }
