"""Seed 004, ScaiGrid's queue API (an ARQ wrapper): job bodies as v1 CreateTask, v1
tasks as ARQ-style job info, HITL requests as approvals. Pure mapping, no I/O;
docs/compat/004-scaigrid.md explains each choice.

A job's input is `{"args": [...], "kwargs": {...}}`, the shape the Celery brain (seed
001) also reads, so the same task reads the same way through both.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from conveyor.server.compat.body import (
    Fields,
    check,
    comma_list,
    page_of,
    rfc3339,
    seconds_of,
    value_of,
)
from conveyor.server.errors import Violations
from conveyor.server.gateway.jsonform import to_json
from conveyor.v1 import enums_pb2, queue_pb2, task_pb2, task_service_pb2

__all__ = [
    "JOB_RENAMES",
    "STATUSES",
    "depth_public",
    "hitl_public",
    "job_public",
    "list_request",
    "submit_request",
]

_T = enums_pb2
STATUSES: dict[str, tuple[enums_pb2.TaskState.ValueType, ...]] = {
    # ARQ's JobStatus names.
    "deferred": (_T.TASK_STATE_SCHEDULED,),
    # A HITL job is "a queued job that waits for human approval".
    "queued": (_T.TASK_STATE_QUEUED, _T.TASK_STATE_AWAITING_APPROVAL),
    "in_progress": (_T.TASK_STATE_RUNNING,),
    "complete": (
        _T.TASK_STATE_SUCCEEDED,
        _T.TASK_STATE_FAILED,
        _T.TASK_STATE_CANCELLED,
        _T.TASK_STATE_INTERRUPTED,
    ),
}
_OUTCOMES = {
    _T.TASK_STATE_SUCCEEDED: "succeeded",
    _T.TASK_STATE_FAILED: "failed",
    _T.TASK_STATE_CANCELLED: "cancelled",
    _T.TASK_STATE_INTERRUPTED: "interrupted",
}
JOB_RENAMES: dict[str, str] = {
    "task.kind": "function",
    "task.queue": "queue_name",
    "task.input": "args",
    "task.priority": "priority",
    "task.correlation_id": "correlation_id",
    "task.dedupe_policy.key": "job_id",
    "task.schedule_time": "defer_until",
    "task.retry_policy.max_attempts": "max_tries",
    "task.approval_timeout": "approval_timeout_seconds",
    "task.parent_task": "parent_job_id",
    "page_size": "limit",
    "page_token": "cursor",
    "filter.queues": "queue_name",
}
"""v1 field path -> the job body's field, for error messages."""


def task_name(project: str, job_id: str) -> str:
    return f"projects/{project}/tasks/{job_id}"


def submit_request(
    project: str, body: Mapping[str, Any], request_id: str = ""
) -> task_service_pb2.CreateTaskRequest:
    """POST /v1/queue/jobs -> CreateTask."""
    f = Fields(body)
    args = f.any("args")
    if args is not None and not isinstance(args, list):
        f.violations.add("args", "must be a JSON array")
    kwargs = f.obj("kwargs")
    task = task_pb2.Task(
        kind=f.text("function", required=True),
        queue=f.text("queue_name"),
        priority=f.integer("priority") or 0,
        correlation_id=f.text("correlation_id"),
        requires_approval=bool(f.flag("requires_approval")),
    )
    task.input.CopyFrom(value_of({"args": args or [], "kwargs": kwargs or {}}))
    job_id = f.text("job_id")
    if job_id:
        # ARQ: a second enqueue with the same job id does not run twice. Conveyor's
        # dedupe key gives back the job already holding it.
        task.dedupe_policy.key = job_id
    defer_by = f.integer("defer_by")
    defer_until = f.timestamp("defer_until")
    if defer_by is not None and defer_until is not None:
        f.violations.add("defer_by", "give defer_by or defer_until, not both")
    elif defer_until is not None:
        task.schedule_time.CopyFrom(defer_until)
    elif defer_by:
        if defer_by < 0:
            f.violations.add("defer_by", "must be 0 or more seconds")
        else:
            task.schedule_time.GetCurrentTime()
            task.schedule_time.FromNanoseconds(
                task.schedule_time.ToNanoseconds() + defer_by * 1_000_000_000
            )
    tries = f.integer("max_tries")
    if tries is not None:
        task.retry_policy.max_attempts = tries
    timeout = f.integer("approval_timeout_seconds")
    if timeout is not None:
        task.approval_timeout.CopyFrom(seconds_of(timeout))
    parent = f.text("parent_job_id")
    if parent:
        task.parent_task = task_name(project, parent)
    f.check()
    return task_service_pb2.CreateTaskRequest(
        parent=f"projects/{project}", task=task, request_id=request_id
    )


def list_request(
    project: str, q: Mapping[str, list[str]], *, mine: bool = False, **filters: Any
) -> task_service_pb2.ListTasksRequest:
    """A page of jobs: `status`, `queue_name`, `limit`, `cursor`; `mine` keeps the
    calling key's own jobs ("List your jobs": TaskFilter.creators `me`)."""
    v = Violations()
    found = task_pb2.TaskFilter(**filters)
    for status in comma_list(q.get("status", [])):
        states = STATUSES.get(status.lower())
        if states is None:
            v.add("status", f"{status!r} is not one of {', '.join(STATUSES)}")
        else:
            found.states.extend(s for s in states if s not in found.states)
    found.queues.extend(comma_list(q.get("queue_name", [])))
    if mine:
        found.creators.append("me")
    request = task_service_pb2.ListTasksRequest(parent=f"projects/{project}", filter=found)
    request.page_token, request.page_size = page_of(v, q)
    check(v)
    return request


def status_of(task: task_pb2.Task) -> str:
    for name, states in STATUSES.items():
        if task.state in states:
            return name
    return "queued"


def _args_kwargs(task: task_pb2.Task) -> tuple[Any, Any]:
    data = to_json(task.input) if task.HasField("input") else None
    if isinstance(data, dict) and set(data) <= {"args", "kwargs"}:
        return data.get("args", []), data.get("kwargs", {})
    # A task created elsewhere (v1, another seed) with any other input: all of it is
    # one positional argument.
    return ([] if data is None else [data]), {}


def _hitl(task: task_pb2.Task) -> dict[str, Any] | None:
    if not task.requires_approval:
        return None
    job_id = task.name.rsplit("/", 1)[-1]
    if task.state == _T.TASK_STATE_AWAITING_APPROVAL:
        status = "pending"
    elif task.HasField("approval"):
        status = "approved" if task.approval.approved else "rejected"
    else:
        status = "rejected" if task.state == _T.TASK_STATE_CANCELLED else "approved"
    decision = task.approval if task.HasField("approval") else None
    return {
        "request_id": job_id,
        "status": status,
        "decided_by": decision.approver if decision is not None else None,
        "decided_at": rfc3339(decision, "decide_time") if decision is not None else None,
        "comment": decision.comment if decision is not None and decision.comment else None,
    }


def job_public(task: task_pb2.Task) -> dict[str, Any]:
    """A v1 Task as ARQ-style job info."""
    args, kwargs = _args_kwargs(task)
    complete = task.state in STATUSES["complete"]
    error = None
    if task.HasField("error"):
        error = {"type": task.error.type or None, "message": task.error.message}
    return {
        "job_id": task.name.rsplit("/", 1)[-1],
        "function": task.kind,
        "args": args,
        "kwargs": kwargs,
        "queue_name": task.queue,
        "status": status_of(task),
        "outcome": _OUTCOMES.get(task.state),
        "success": task.state == _T.TASK_STATE_SUCCEEDED if complete else None,
        "result": to_json(task.result) if task.HasField("result") else None,
        "error": error,
        "job_try": task.attempt,
        "priority": task.priority,
        "correlation_id": task.correlation_id or None,
        "parent_job_id": task.parent_task.rsplit("/", 1)[-1] if task.parent_task else None,
        "cancel_requested": task.cancel_requested,
        "hitl": _hitl(task),
        "enqueue_time": rfc3339(task, "create_time"),
        "defer_until": rfc3339(task, "schedule_time")
        if task.state == _T.TASK_STATE_SCHEDULED
        else None,
        "start_time": rfc3339(task, "start_time"),
        "finish_time": rfc3339(task, "end_time"),
    }


def hitl_public(task: task_pb2.Task) -> dict[str, Any]:
    """A task awaiting approval as a pending HITL request (its id is the job's)."""
    job = job_public(task)
    expires = None
    if task.HasField("approval_timeout") and task.HasField("create_time"):
        deadline = task.create_time.ToDatetime() + task.approval_timeout.ToTimedelta()
        expires = deadline.isoformat(timespec="milliseconds") + "Z"
    return {
        "request_id": job["job_id"],
        "job_id": job["job_id"],
        "function": job["function"],
        "args": job["args"],
        "kwargs": job["kwargs"],
        "queue_name": job["queue_name"],
        "correlation_id": job["correlation_id"],
        "status": job["hitl"]["status"] if job["hitl"] else "pending",
        "created_at": job["enqueue_time"],
        "expires_at": expires,
    }


def _age(stats: queue_pb2.QueueStats) -> float | None:
    if not stats.HasField("oldest_queued_age"):
        return None
    age: timedelta = stats.oldest_queued_age.ToTimedelta()
    return age.total_seconds()


def depth_public(queues: list[queue_pb2.Queue], *, detail: bool = False) -> dict[str, Any]:
    """ListQueues as depth metrics: per queue and in total (`detail` adds the
    observability figures: oldest age, the last hour's outcomes, paused)."""
    keys = ("queued", "deferred", "in_progress", "awaiting_approval")
    total = dict.fromkeys(keys, 0)
    items = []
    for queue in queues:
        stats = queue.stats
        item: dict[str, Any] = {
            "queue_name": queue.name.rsplit("/", 1)[-1],
            "queued": stats.queued + stats.awaiting_approval,
            "deferred": stats.scheduled,
            "in_progress": stats.running,
            "awaiting_approval": stats.awaiting_approval,
        }
        for key in keys:
            total[key] += item[key]
        if detail:
            item |= {
                "paused": queue.paused,
                "oldest_queued_age_seconds": _age(stats),
                "succeeded_last_hour": stats.succeeded_last_hour,
                "failed_last_hour": stats.failed_last_hour,
            }
        items.append(item)
    return {"queues": items, "total": total}
