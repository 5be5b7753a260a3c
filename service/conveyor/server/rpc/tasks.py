"""TaskService: CreateTask, BatchCreateTasks, GetTask, ListTasks, CancelTask,
ApproveTask, RejectTask, GetTaskTree, BatchDeleteTasks.

The other TaskService methods are not defined here and answer UNIMPLEMENTED.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from typing import Any

import grpc
from google.protobuf import duration_pb2, timestamp_pb2

from conveyor.server.domain.tasks import Created, Tasks
from conveyor.server.errors import ConveyorError
from conveyor.server.render.tasks import task_message
from conveyor.server.rpc import principal
from conveyor.server.rpc.status import to_status_proto
from conveyor.server.store.task_inserts import Inserted, NewTask
from conveyor.v1 import enums_pb2, task_pb2, task_service_pb2

__all__ = ["TaskServicer", "created_message"]

Context = grpc.aio.ServicerContext[Any, Any]

_STATES = {name: enums_pb2.TaskState.Value(f"TASK_STATE_{name}") for name in (
    "SCHEDULED", "QUEUED", "AWAITING_APPROVAL", "RUNNING",
    "SUCCEEDED", "FAILED", "CANCELLED", "INTERRUPTED",
)}  # fmt: skip
_BACKOFFS = {name: enums_pb2.Backoff.Value(f"BACKOFF_{name}") for name in (
    "EXPONENTIAL_JITTER", "LINEAR", "FIXED",
)}  # fmt: skip
_ACTIONS = {
    "": enums_pb2.APPROVAL_ACTION_UNSPECIFIED,
    "APPROVE": enums_pb2.APPROVAL_ACTION_APPROVE,
    "REJECT": enums_pb2.APPROVAL_ACTION_REJECT,
}


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    # Integer arithmetic: exact, and several times faster than Timestamp.FromDatetime.
    delta = value - _EPOCH
    return timestamp_pb2.Timestamp(
        seconds=delta.days * 86_400 + delta.seconds, nanos=delta.microseconds * 1000
    )


@functools.lru_cache(maxsize=1024)
def _ms(value: int) -> duration_pb2.Duration:
    """A Duration of `value` ms; cached, so never mutate the result (fields copy it)."""
    return duration_pb2.Duration(seconds=value // 1000, nanos=(value % 1000) * 1_000_000)


@functools.lru_cache(maxsize=1024)
def _policy(max_attempts: int, backoff: str, initial_ms: int, max_ms: int) -> task_pb2.RetryPolicy:
    """Cached like _ms: a handful of policies cover nearly every task."""
    return task_pb2.RetryPolicy(
        max_attempts=max_attempts,
        backoff=_BACKOFFS[backoff],
        initial_backoff=_ms(initial_ms),
        max_backoff=_ms(max_ms),
    )


def created_message(new: NewTask, inserted: Inserted, source: task_pb2.Task) -> task_pb2.Task:
    """The Task a create returns, built from what was asked and what the insert decided.

    Equal to what GetTask would read back, without reading it back (the input in
    particular is copied, not decoded from JSON again).
    """
    prefix = f"projects/{new.project}/tasks/"
    task = task_pb2.Task(
        name=f"{prefix}{new.id}",
        queue=new.queue,
        kind=new.kind,
        priority=new.priority,
        state=_STATES[new.state],
        retry_policy=_policy(
            inserted.max_attempts,
            inserted.backoff,
            inserted.initial_backoff_ms,
            inserted.max_backoff_ms,
        ),
        schedule_time=_timestamp(new.schedule_time),
        lease_duration=_ms(new.lease_duration_ms),
        concurrency_key=new.concurrency_key or "",
        concurrency_limit=new.concurrency_limit,
        requires_approval=new.requires_approval,
        correlation_id=new.correlation_id,
        parent_task=f"{prefix}{new.parent_task}" if new.parent_task else "",
        root_task=f"{prefix}{inserted.root_task}",
        callback_url=new.callback_url,
        resume_token=new.resume_token,
        schedule=new.schedule,
        create_time=_timestamp(new.create_time),
        update_time=_timestamp(inserted.update_time),
        approval_timeout=(
            _ms(new.approval_timeout_ms) if new.approval_timeout_ms is not None else None
        ),
        approval_timeout_action=_ACTIONS[new.approval_timeout_action],
    )
    if new.input is not None:  # None also for a JSON null input, which GetTask shows unset
        task.input.CopyFrom(source.input)
    if source.labels:
        task.labels.update(source.labels)
    return task


def _answer(created: Created, source: task_pb2.Task) -> task_pb2.Task:
    if created.existing is not None:
        return task_message(created.existing)
    assert created.new is not None and created.inserted is not None
    return created_message(created.new, created.inserted, source)


class TaskServicer:
    """Serves the TaskService methods it defines; the others answer UNIMPLEMENTED."""

    def __init__(self, tasks: Tasks) -> None:
        self._tasks = tasks

    async def CreateTask(
        self, request: task_service_pb2.CreateTaskRequest, context: Context
    ) -> task_pb2.Task:
        created = await self._tasks.create(request.parent, request.task, request.request_id)
        return _answer(created, request.task)

    async def BatchCreateTasks(
        self, request: task_service_pb2.BatchCreateTasksRequest, context: Context
    ) -> task_service_pb2.BatchCreateTasksResponse:
        results = await self._tasks.batch_create(
            request.parent, request.requests, atomic=request.atomic
        )
        response = task_service_pb2.BatchCreateTasksResponse()
        for item, result in zip(request.requests, results, strict=True):
            entry = response.results.add()
            if isinstance(result, ConveyorError):
                entry.status.CopyFrom(to_status_proto(result))
            elif result.deduped:
                entry.existing_task.CopyFrom(_answer(result, item.task))
            else:
                entry.task.CopyFrom(_answer(result, item.task))
        return response

    async def GetTask(
        self, request: task_service_pb2.GetTaskRequest, context: Context
    ) -> task_pb2.Task:
        view = await self._tasks.get(request.name)
        return task_message(view.row, view.attempts, _blocked(view.blocked_reason))

    async def ListTasks(
        self, request: task_service_pb2.ListTasksRequest, context: Context
    ) -> task_service_pb2.ListTasksResponse:
        rows, blocked, token = await self._tasks.list_page(request)
        return task_service_pb2.ListTasksResponse(
            tasks=[task_message(r, blocked_reason=_blocked(blocked.get(r.id))) for r in rows],
            next_page_token=token,
        )

    async def CancelTask(
        self, request: task_service_pb2.CancelTaskRequest, context: Context
    ) -> task_pb2.Task:
        cancelled = await self._tasks.cancel(request.name, request.reason, principal.current())
        return task_message(cancelled)

    async def ApproveTask(
        self, request: task_service_pb2.ApproveTaskRequest, context: Context
    ) -> task_pb2.Task:
        row = await self._tasks.decide(
            request.name, approve=True, text=request.comment, principal=principal.current()
        )
        return task_message(row)

    async def RejectTask(
        self, request: task_service_pb2.RejectTaskRequest, context: Context
    ) -> task_pb2.Task:
        row = await self._tasks.decide(
            request.name, approve=False, text=request.reason, principal=principal.current()
        )
        return task_message(row)

    async def GetTaskTree(
        self, request: task_service_pb2.GetTaskTreeRequest, context: Context
    ) -> task_service_pb2.TaskTree:
        rows, truncated = await self._tasks.tree(request.name)
        return task_service_pb2.TaskTree(tasks=[task_message(r) for r in rows], truncated=truncated)

    async def BatchDeleteTasks(
        self, request: task_service_pb2.BatchDeleteTasksRequest, context: Context
    ) -> task_service_pb2.BatchDeleteTasksResponse:
        deleted, skipped = await self._tasks.batch_delete(
            request.parent,
            request.names,
            request.filter if request.HasField("filter") else None,
            principal.current(),
        )
        return task_service_pb2.BatchDeleteTasksResponse(deleted_count=deleted, skipped=skipped)


def _blocked(reason: str | None) -> enums_pb2.BlockedReason.ValueType:
    return (
        enums_pb2.BlockedReason.Value(f"BLOCKED_REASON_{reason}")
        if reason
        else enums_pb2.BLOCKED_REASON_UNSPECIFIED
    )
