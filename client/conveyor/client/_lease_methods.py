"""Lease methods of the clients, for workers of your own: lease ready tasks, extend a
lease (with progress), complete or fail a leased task. The Worker SDK does all of this
over its stream; these are the unary calls other workers and tests use.
"""

# The async methods take `timeout` as the gRPC deadline of each call, as the sync ones do.
# ruff: noqa: ASYNC109

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from conveyor.client import _requests as req
from conveyor.client._json import to_struct, to_value
from conveyor.client._limits import DEFAULT_TIMEOUT
from conveyor.client._requests import Seconds
from conveyor.v1 import task_pb2, worker_pb2, worker_pb2_grpc

__all__ = ["AsyncLeaseMethods", "LeaseMethods"]


def lease_tasks_request(
    project: str,
    worker: str,
    queues: Iterable[str],
    max_tasks: int,
    wait_timeout: Seconds,
    lease_duration: Seconds | None,
) -> worker_pb2.LeaseTasksRequest:
    request = worker_pb2.LeaseTasksRequest(
        parent=req.parent(project),
        worker=worker,
        queues=list(queues),
        max_tasks=max_tasks,
        wait_timeout=req.duration(wait_timeout),
    )
    if lease_duration is not None:
        request.lease_duration.CopyFrom(req.duration(lease_duration))
    return request


def extend_lease_request(
    project: str,
    name: str,
    lease_id: str,
    lease_duration: Seconds | None,
    progress: Mapping[str, Any] | None,
) -> worker_pb2.ExtendLeaseRequest:
    request = worker_pb2.ExtendLeaseRequest(
        name=req.child(project, "tasks", name), lease_id=lease_id
    )
    if lease_duration is not None:
        request.lease_duration.CopyFrom(req.duration(lease_duration))
    if progress is not None:
        request.progress.CopyFrom(to_struct(progress))
    return request


def complete_task_request(
    project: str, name: str, lease_id: str, result: Any, summary: str, resume_token: str
) -> worker_pb2.CompleteTaskRequest:
    request = worker_pb2.CompleteTaskRequest(
        name=req.child(project, "tasks", name),
        lease_id=lease_id,
        summary=summary,
        resume_token=resume_token,
    )
    if result is not None:
        request.result.CopyFrom(to_value(result))
    return request


def fail_task_request(
    project: str,
    name: str,
    lease_id: str,
    error_type: str,
    message: str,
    details: Mapping[str, Any] | None,
    retryable: bool,
) -> worker_pb2.FailTaskRequest:
    error = task_pb2.TaskError(type=error_type, message=message, retryable=retryable)
    if details:
        error.details.CopyFrom(to_struct(details))
    return worker_pb2.FailTaskRequest(
        name=req.child(project, "tasks", name), lease_id=lease_id, error=error, retryable=retryable
    )


class LeaseMethods:
    """WorkerService lease methods of Client."""

    workers: worker_pb2_grpc.WorkerServiceStub
    project: str
    timeout: float | None

    def lease_tasks(
        self,
        queues: Iterable[str],
        *,
        worker: str,
        max_tasks: int = 1,
        wait_timeout: Seconds = 0,
        lease_duration: Seconds | None = None,
        project: str | None = None,
        timeout: float | None = None,
    ) -> list[task_pb2.Lease]:
        """Leases up to max_tasks ready tasks, waiting up to wait_timeout for one."""
        request = lease_tasks_request(
            project or self.project, worker, queues, max_tasks, wait_timeout, lease_duration
        )
        # The call's deadline covers the long poll on top of the usual allowance.
        deadline = (timeout or self.timeout or DEFAULT_TIMEOUT) + req.seconds(wait_timeout)
        return list(self.workers.LeaseTasks(request, timeout=deadline).leases)

    def extend_lease(
        self,
        name: str,
        lease_id: str,
        *,
        lease_duration: Seconds | None = None,
        progress: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> worker_pb2.ExtendLeaseResponse:
        request = extend_lease_request(self.project, name, lease_id, lease_duration, progress)
        return self.workers.ExtendLease(request, timeout=timeout)

    def complete_task(
        self,
        name: str,
        lease_id: str,
        result: Any = None,
        *,
        summary: str = "",
        resume_token: str = "",
        timeout: float | None = None,
    ) -> task_pb2.Task:
        request = complete_task_request(self.project, name, lease_id, result, summary, resume_token)
        return self.workers.CompleteTask(request, timeout=timeout)

    def fail_task(
        self,
        name: str,
        lease_id: str,
        *,
        error_type: str = "Error",
        message: str = "",
        details: Mapping[str, Any] | None = None,
        retryable: bool = True,
        timeout: float | None = None,
    ) -> task_pb2.Task:
        request = fail_task_request(
            self.project, name, lease_id, error_type, message, details, retryable
        )
        return self.workers.FailTask(request, timeout=timeout)


class AsyncLeaseMethods:
    """WorkerService lease methods of AsyncClient."""

    workers: worker_pb2_grpc.WorkerServiceAsyncStub
    project: str
    timeout: float | None

    async def lease_tasks(
        self,
        queues: Iterable[str],
        *,
        worker: str,
        max_tasks: int = 1,
        wait_timeout: Seconds = 0,
        lease_duration: Seconds | None = None,
        project: str | None = None,
        timeout: float | None = None,
    ) -> list[task_pb2.Lease]:
        """Leases up to max_tasks ready tasks, waiting up to wait_timeout for one."""
        request = lease_tasks_request(
            project or self.project, worker, queues, max_tasks, wait_timeout, lease_duration
        )
        # The call's deadline covers the long poll on top of the usual allowance.
        deadline = (timeout or self.timeout or DEFAULT_TIMEOUT) + req.seconds(wait_timeout)
        response = await self.workers.LeaseTasks(request, timeout=deadline)
        return list(response.leases)

    async def extend_lease(
        self,
        name: str,
        lease_id: str,
        *,
        lease_duration: Seconds | None = None,
        progress: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> worker_pb2.ExtendLeaseResponse:
        request = extend_lease_request(self.project, name, lease_id, lease_duration, progress)
        return await self.workers.ExtendLease(request, timeout=timeout)

    async def complete_task(
        self,
        name: str,
        lease_id: str,
        result: Any = None,
        *,
        summary: str = "",
        resume_token: str = "",
        timeout: float | None = None,
    ) -> task_pb2.Task:
        request = complete_task_request(self.project, name, lease_id, result, summary, resume_token)
        return await self.workers.CompleteTask(request, timeout=timeout)

    async def fail_task(
        self,
        name: str,
        lease_id: str,
        *,
        error_type: str = "Error",
        message: str = "",
        details: Mapping[str, Any] | None = None,
        retryable: bool = True,
        timeout: float | None = None,
    ) -> task_pb2.Task:
        request = fail_task_request(
            self.project, name, lease_id, error_type, message, details, retryable
        )
        return await self.workers.FailTask(request, timeout=timeout)
