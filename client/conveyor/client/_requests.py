"""Request messages built from keyword arguments, shared by Client and AsyncClient.

Names may be given in full (`projects/p/tasks/ID`) or as the short id (`ID`), which
is then placed under the client's project. Times are datetimes (naive ones are UTC,
as protobuf reads them) and durations are timedeltas or seconds.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Required, TypedDict

from google.protobuf import duration_pb2, field_mask_pb2, timestamp_pb2

from conveyor.client._json import to_value
from conveyor.client._task_logs import queue_log_bounds
from conveyor.v1 import enums_pb2, queue_pb2, task_pb2, task_service_pb2

Seconds = timedelta | float


class TaskOptions(TypedDict, total=False):
    """The optional fields of a new task; unset ones take the server's defaults."""

    queue: str
    """The queue's short id; default `default`."""
    priority: int
    """1 (highest) to 9 (lowest); 0 means 5."""
    labels: Mapping[str, str]
    schedule_time: datetime
    """Not before this time."""
    lease_duration: Seconds
    """How long a worker may go without a heartbeat; default 30 s."""
    execution_timeout: Seconds
    """How long one attempt may run before the server ends it (EXECUTION_TIMEOUT)."""
    retry_policy: task_pb2.RetryPolicy | Mapping[str, Any]
    """A RetryPolicy, or {max_attempts, backoff ("exponential_jitter" | "linear" |
    "fixed"), initial_backoff, max_backoff} with durations as timedelta or seconds."""
    dedupe_policy: task_pb2.DedupePolicy | Mapping[str, Any]
    """A DedupePolicy, or {key, window, on_conflict ("return_existing" | "reject" |
    "replace_input" | "debounce")}."""
    concurrency_key: str
    concurrency_limit: int
    requires_approval: bool
    approval_timeout: Seconds
    correlation_id: str
    parent_task: str
    callback_url: str
    resume_token: str
    depends_on: Iterable[str]
    """Tasks (names or short ids) that must succeed before this one runs; up to 100."""
    dependency_failure_policy: int | str
    """What a dependency that ends without succeeding does: `cancel` (the default:
    this task is CANCELLED) or `run_anyway`."""


class TaskSpec(TaskOptions, total=False):
    """One item of batch_create_tasks: a kind, its input and any TaskOptions."""

    kind: Required[str]
    input: Any
    request_id: str


class TaskCriteria(TypedDict, total=False):
    """Which tasks (fields ANDed, values of one field ORed); see TaskFilter."""

    states: Iterable[int | str]
    """TaskState values or names: `running`, `RUNNING` or `TASK_STATE_RUNNING`."""
    priorities: Iterable[int | str]
    kinds: Iterable[str]
    queues: Iterable[str]
    workers: Iterable[str]
    labels: Mapping[str, str]
    correlation_id: str
    root_task: str
    search: str
    created_after: datetime
    created_before: datetime


TERMINAL_STATES = frozenset(
    {
        enums_pb2.TASK_STATE_SUCCEEDED,
        enums_pb2.TASK_STATE_FAILED,
        enums_pb2.TASK_STATE_CANCELLED,
        enums_pb2.TASK_STATE_INTERRUPTED,
    }
)


def state_name(state: int) -> str:
    return enums_pb2.TaskState.Name(state).removeprefix("TASK_STATE_")  # type: ignore[arg-type]


def poll_delays() -> Iterator[float]:
    """Waits between polls: 20 ms doubling up to 1 s."""
    delay = 0.02
    while True:
        yield delay
        delay = min(delay * 2, 1.0)


def parent(project: str) -> str:
    return project if project.startswith("projects/") else f"projects/{project}"


def child(project: str, collection: str, name: str) -> str:
    """A full resource name from a full name or a short id."""
    if "/" in name:
        return name
    return f"{parent(project)}/{collection}/{name}"


def duration(value: Seconds) -> duration_pb2.Duration:
    message = duration_pb2.Duration()
    if isinstance(value, timedelta):
        message.FromTimedelta(value)
    else:
        message.FromNanoseconds(round(value * 1e9))
    return message


def timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    message = timestamp_pb2.Timestamp()
    message.FromDatetime(value)
    return message


def enum_value(enum: Any, prefix: str, value: int | str) -> int:
    """An enum number from a number or a name with or without its prefix, any case."""
    if isinstance(value, int):
        return value
    name = value.upper()
    number: int = enum.Value(name if name.startswith(prefix) else prefix + name)
    return number


def retry_policy(value: task_pb2.RetryPolicy | Mapping[str, Any]) -> task_pb2.RetryPolicy:
    if isinstance(value, task_pb2.RetryPolicy):
        return value
    policy = task_pb2.RetryPolicy(max_attempts=int(value.get("max_attempts", 0)))
    if "backoff" in value:
        policy.backoff = enum_value(enums_pb2.Backoff, "BACKOFF_", value["backoff"])  # type: ignore[assignment]
    if "initial_backoff" in value:
        policy.initial_backoff.CopyFrom(duration(value["initial_backoff"]))
    if "max_backoff" in value:
        policy.max_backoff.CopyFrom(duration(value["max_backoff"]))
    return policy


def dedupe_policy(value: task_pb2.DedupePolicy | Mapping[str, Any]) -> task_pb2.DedupePolicy:
    if isinstance(value, task_pb2.DedupePolicy):
        return value
    policy = task_pb2.DedupePolicy(key=str(value["key"]))
    if "window" in value:
        policy.window.CopyFrom(duration(value["window"]))
    if "on_conflict" in value:
        policy.on_conflict = enum_value(  # type: ignore[assignment]
            enums_pb2.OnConflict, "ON_CONFLICT_", value["on_conflict"]
        )
    return policy


_PLAIN_FIELDS = (
    "queue",
    "priority",
    "concurrency_key",
    "concurrency_limit",
    "requires_approval",
    "correlation_id",
    "parent_task",
    "callback_url",
    "resume_token",
)


def task(kind: str, input: Any, options: TaskOptions, project: str = "") -> task_pb2.Task:
    """The Task message for a create; raises TypeError when input is not JSON.

    Short ids in depends_on are placed under `project`.
    """
    unknown = set(options) - set(TaskOptions.__annotations__)
    if unknown:
        raise TypeError(f"unknown task option(s): {', '.join(sorted(unknown))}")
    message = task_pb2.Task(kind=kind)
    if input is not None:
        message.input.CopyFrom(to_value(input))
    for field in _PLAIN_FIELDS:
        if field in options:
            setattr(message, field, options[field])  # type: ignore[literal-required]
    if "labels" in options:
        message.labels.update(options["labels"])
    if "schedule_time" in options:
        message.schedule_time.CopyFrom(timestamp(options["schedule_time"]))
    if "lease_duration" in options:
        message.lease_duration.CopyFrom(duration(options["lease_duration"]))
    if "execution_timeout" in options:
        message.execution_timeout.CopyFrom(duration(options["execution_timeout"]))
    if "approval_timeout" in options:
        message.approval_timeout.CopyFrom(duration(options["approval_timeout"]))
    if "retry_policy" in options:
        message.retry_policy.CopyFrom(retry_policy(options["retry_policy"]))
    if "dedupe_policy" in options:
        message.dedupe_policy.CopyFrom(dedupe_policy(options["dedupe_policy"]))
    if "depends_on" in options:
        message.depends_on.extend(
            child(project, "tasks", name) if project else name for name in options["depends_on"]
        )
    if "dependency_failure_policy" in options:
        message.dependency_failure_policy = enum_value(  # type: ignore[assignment]
            enums_pb2.DependencyFailurePolicy,
            "DEPENDENCY_FAILURE_POLICY_",
            options["dependency_failure_policy"],
        )
    return message


def create_task(
    project: str, kind: str, input: Any, request_id: str | None, options: TaskOptions
) -> task_service_pb2.CreateTaskRequest:
    # A fresh request_id by default makes the create idempotent, so the client's own
    # retry on UNAVAILABLE returns the first result instead of creating twice.
    return task_service_pb2.CreateTaskRequest(
        parent=parent(project),
        task=task(kind, input, options, project),
        request_id=uuid.uuid4().hex if request_id is None else request_id,
    )


def batch_create_tasks(
    project: str, items: Iterable[task_pb2.Task | TaskSpec], atomic: bool
) -> task_service_pb2.BatchCreateTasksRequest:
    request = task_service_pb2.BatchCreateTasksRequest(parent=parent(project), atomic=atomic)
    for item in items:
        if isinstance(item, task_pb2.Task):
            request.requests.add(task=item)
            continue
        options = dict(item)
        kind = options.pop("kind")
        input = options.pop("input", None)
        request_id = options.pop("request_id", "")
        request.requests.add(
            task=task(kind, input, options, project),  # type: ignore[arg-type]
            request_id=request_id,
        )
    return request


def task_filter(
    criteria: TaskCriteria, base: task_pb2.TaskFilter | None = None
) -> task_pb2.TaskFilter:
    unknown = set(criteria) - set(TaskCriteria.__annotations__)
    if unknown:
        raise TypeError(f"unknown filter field(s): {', '.join(sorted(unknown))}")
    message = task_pb2.TaskFilter()
    if base is not None:
        message.CopyFrom(base)
    for state in criteria.get("states", ()):
        message.states.append(enum_value(enums_pb2.TaskState, "TASK_STATE_", state))  # type: ignore[arg-type]
    message.priorities.extend(str(p) for p in criteria.get("priorities", ()))
    message.kinds.extend(criteria.get("kinds", ()))
    message.queues.extend(criteria.get("queues", ()))
    message.workers.extend(criteria.get("workers", ()))
    message.labels.update(criteria.get("labels", {}))
    for field in ("correlation_id", "root_task", "search"):
        if field in criteria:
            setattr(message, field, criteria[field])
    if "created_after" in criteria:
        message.create_time_after.CopyFrom(timestamp(criteria["created_after"]))
    if "created_before" in criteria:
        message.create_time_before.CopyFrom(timestamp(criteria["created_before"]))
    return message


def list_tasks(
    project: str,
    filter: task_pb2.TaskFilter | None,
    criteria: TaskCriteria,
    order_by: str,
    page_size: int,
    page_token: str,
) -> task_service_pb2.ListTasksRequest:
    return task_service_pb2.ListTasksRequest(
        parent=parent(project),
        filter=task_filter(criteria, filter),
        order_by=order_by,
        page_size=page_size,
        page_token=page_token,
    )


def update_queue(
    project: str,
    name: str,
    max_concurrency: int | None,
    rate_limit: str | None,
    default_retry_policy: task_pb2.RetryPolicy | Mapping[str, Any] | None,
    execution_timeout: Seconds | None = None,
    finished_task_ttl: Seconds | None = None,
    log_bounds: tuple[int | None, int | None] = (None, None),
    redact_paths: Sequence[str] | None = None,
) -> queue_pb2.UpdateQueueRequest:
    queue = queue_pb2.Queue(name=child(project, "queues", name))
    paths = []
    if max_concurrency is not None:
        queue.max_concurrency = max_concurrency
        paths.append("max_concurrency")
    if rate_limit is not None:
        queue.rate_limit = rate_limit
        paths.append("rate_limit")
    if default_retry_policy is not None:
        queue.default_retry_policy.CopyFrom(retry_policy(default_retry_policy))
        paths.append("default_retry_policy")
    if execution_timeout is not None:
        # 0 clears the queue's default: tasks created later run without a limit.
        if execution_timeout:
            queue.execution_timeout.CopyFrom(duration(execution_timeout))
        paths.append("execution_timeout")
    if finished_task_ttl is not None:
        # Set, even to 0: zero keeps the queue's finished tasks forever.
        queue.finished_task_ttl.CopyFrom(duration(finished_task_ttl))
        paths.append("finished_task_ttl")
    paths += queue_log_bounds(queue, log_bounds)
    if redact_paths is not None:
        # Replaces the list; an empty one clears it.
        queue.redact_paths.extend(redact_paths)
        paths.append("redact_paths")
    if not paths:
        raise TypeError("update_queue needs at least one setting to change")
    return queue_pb2.UpdateQueueRequest(
        queue=queue, update_mask=field_mask_pb2.FieldMask(paths=paths)
    )


def seconds(value: Seconds) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)
