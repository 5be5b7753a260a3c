"""TaskService: CreateTask, BatchCreateTasks, GetTask, ListTasks, CancelTask,
ApproveTask, RejectTask, GetTaskTree, BatchDeleteTasks.

The other TaskService methods are not defined here and answer UNIMPLEMENTED.
"""

from __future__ import annotations

from typing import Any

import grpc

from conveyor.server.domain.request_ids import request_hash
from conveyor.server.domain.tasks import Created, Tasks
from conveyor.server.errors import ConveyorError
from conveyor.server.render.created_batch import CreatedBatch
from conveyor.server.render.tasks import CreatedAnswers, created_message, fill_task, task_message
from conveyor.server.rpc import principal
from conveyor.server.rpc.status import to_status_proto
from conveyor.server.rpc.trace_context import creator_traceparent
from conveyor.server.store.task_rows import TaskRow
from conveyor.server.tracing import Tracing
from conveyor.v1 import enums_pb2, task_pb2, task_service_pb2

__all__ = ["TaskServicer"]

Context = grpc.aio.ServicerContext[Any, Any]


def _answer(
    created: Created, source: task_pb2.Task, into: task_pb2.Task | None = None
) -> task_pb2.Task:
    """The Task of a create; filled into `into` when given (a batch's result entry, so a
    thousand tasks are not each built and then copied)."""
    if created.existing is not None:
        task = task_message(created.existing)
        if into is None:
            return task
        into.CopyFrom(task)
        return into
    assert created.new is not None and created.inserted is not None
    return created_message(created.new, created.inserted, source, into)


def _created(created: Created) -> bool:
    """Whether `created` made a new task (answered from a template)."""
    return created.existing is None and created.new is not None and created.inserted is not None


class TaskServicer:
    """Serves the TaskService methods it defines; the others answer UNIMPLEMENTED."""

    def __init__(self, tasks: Tasks, tracing: Tracing | None = None) -> None:
        self._tasks = tasks
        self._tracing = tracing
        # Kept across calls: the creates of one producer share a template (~-5 us each).
        self._answers = CreatedAnswers()

    async def CreateTask(
        self, request: task_service_pb2.CreateTaskRequest, context: Context
    ) -> task_pb2.Task:
        created = await self._tasks.create(
            request.parent,
            request.task,
            request.request_id,
            creator=principal.current().key_name,
            traceparent=creator_traceparent(context, self._tracing),
        )
        if not _created(created):
            return _answer(created, request.task)
        assert created.new is not None and created.inserted is not None
        answer = task_pb2.Task()
        self._answers.fill(created.new, created.inserted, request.task, answer)
        return answer

    async def BatchCreateTasks(
        self, request: task_service_pb2.BatchCreateTasksRequest, context: Context
    ) -> task_service_pb2.BatchCreateTasksResponse:
        results = await self._tasks.batch_create(
            request.parent,
            request.requests,
            atomic=request.atomic,
            creator=principal.current().key_name,
            traceparent=creator_traceparent(context, self._tracing),
        )
        # Created tasks are written as bytes and the answer parsed once (render/created_batch.py).
        batch = CreatedBatch(self._answers)
        for item, result in zip(request.requests, results, strict=True):
            if not isinstance(result, ConveyorError) and not result.deduped and _created(result):
                assert result.new is not None and result.inserted is not None
                batch.created(result.new, result.inserted, item.task)
                continue
            entry = task_service_pb2.BatchCreateTaskResult()
            if isinstance(result, ConveyorError):
                entry.status.CopyFrom(to_status_proto(result))
            elif result.deduped:
                _answer(result, item.task, entry.existing_task)
            else:
                _answer(result, item.task, entry.task)
            batch.other(entry)
        return batch.response()

    async def GetTask(
        self, request: task_service_pb2.GetTaskRequest, context: Context
    ) -> task_pb2.Task:
        view = await self._tasks.get(request.name)
        return task_message(view.row, view.attempts, _blocked(view.blocked_reason))

    async def ListTasks(
        self, request: task_service_pb2.ListTasksRequest, context: Context
    ) -> task_service_pb2.ListTasksResponse:
        response = task_service_pb2.ListTasksResponse()
        add = response.tasks.add

        def size_of(row: TaskRow, blocked: str | None) -> int:
            # Rendered in place in the response (no copy), sized here: the page stops
            # before MAX_PAGE_BYTES, and the task that would pass it is dropped below.
            message = add()
            fill_task(message, row)
            if blocked:
                message.blocked_reason = _blocked(blocked)
            return message.ByteSize()

        rows, token = await self._tasks.list_page(request, size_of, me=principal.current().key_name)
        del response.tasks[len(rows) :]
        response.next_page_token = token
        return response

    async def CancelTask(
        self, request: task_service_pb2.CancelTaskRequest, context: Context
    ) -> task_pb2.Task:
        cancelled = await self._tasks.cancel(
            request.name,
            request.reason,
            principal.current(),
            request.request_id,
            request_hash(request),
        )
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
        rows, truncated, dependencies = await self._tasks.tree(request.name)
        return task_service_pb2.TaskTree(
            tasks=[task_message(r) for r in rows],
            truncated=truncated,
            dependencies=[task_message(r) for r in dependencies],
        )

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


# A dict, not BlockedReason.Value of a formatted name: a page of 100 waiting tasks looks
# one up for each.
_BLOCKED_REASONS = {
    name.removeprefix("BLOCKED_REASON_"): number for name, number in enums_pb2.BlockedReason.items()
}


def _blocked(reason: str | None) -> enums_pb2.BlockedReason.ValueType:
    return _BLOCKED_REASONS[reason] if reason else enums_pb2.BLOCKED_REASON_UNSPECIFIED
