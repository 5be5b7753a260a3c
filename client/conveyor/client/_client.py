"""Client: the blocking client, typed methods over typed stubs on one channel."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Unpack

import grpc

from conveyor.client import _requests as req
from conveyor.client._calls import SyncInterceptor
from conveyor.client._events import EventMethods
from conveyor.client._lease_methods import LeaseMethods
from conveyor.client._limits import DEFAULT_TIMEOUT, MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES
from conveyor.client._local import resolve
from conveyor.client._requests import Seconds, TaskCriteria, TaskOptions, TaskSpec
from conveyor.client._task_log_methods import TaskLogMethods
from conveyor.v1 import (
    command_pb2_grpc,
    enums_pb2,
    event_pb2_grpc,
    project_pb2,
    project_pb2_grpc,
    queue_pb2,
    queue_pb2_grpc,
    schedule_pb2_grpc,
    task_pb2,
    task_service_pb2,
    task_service_pb2_grpc,
    worker_pb2,
    worker_pb2_grpc,
)

DEFAULT_PROJECT = "default"
# Receive at least what the server may send, send at most what it receives (_limits.py).
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_RESPONSE_BYTES),
    ("grpc.max_send_message_length", MAX_REQUEST_BYTES),
    ("grpc.keepalive_time_ms", 30_000),
]


def project_from_env(project: str | None) -> str:
    return project or os.environ.get("CONVEYOR_PROJECT") or DEFAULT_PROJECT


class Client(EventMethods, TaskLogMethods, LeaseMethods):
    """A blocking client. `Client()` talks to the local server with its admin key.

    Every unary call gets `timeout` seconds unless the call passes its own
    `timeout=`; idempotent calls (Get, List, and creates with a request_id) are
    retried on UNAVAILABLE; errors are raised as `conveyor.client.ConveyorError`
    subclasses. Methods take names in full or as short ids under `project`
    (argument, else CONVEYOR_PROJECT, else `default`) and return the proto messages.
    The stubs (`tasks`, `queues`, `workers`, `schedules`, `commands`, `events`,
    `projects`) take the generated request messages for anything not covered here.
    """

    def __init__(
        self,
        target: str | None = None,
        *,
        api_key: str | None = None,
        data_dir: str | os.PathLike[str] | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        project: str | None = None,
    ) -> None:
        self.target, self.api_key = resolve(target, api_key, data_dir)
        self.project = project_from_env(project)
        self.timeout = timeout
        raw = grpc.insecure_channel(self.target, options=CHANNEL_OPTIONS)
        self._raw = raw
        self.channel = grpc.intercept_channel(raw, SyncInterceptor(self.api_key, timeout))
        self.tasks = task_service_pb2_grpc.TaskServiceStub(self.channel)
        self.queues = queue_pb2_grpc.QueueServiceStub(self.channel)
        self.workers = worker_pb2_grpc.WorkerServiceStub(self.channel)
        self.schedules = schedule_pb2_grpc.ScheduleServiceStub(self.channel)
        self.commands = command_pb2_grpc.CommandServiceStub(self.channel)
        self.events = event_pb2_grpc.EventServiceStub(self.channel)
        self.projects = project_pb2_grpc.ProjectServiceStub(self.channel)

    def close(self) -> None:
        self._raw.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # Tasks.

    def create_task(
        self,
        kind: str,
        input: Any = None,
        *,
        request_id: str | None = None,
        project: str | None = None,
        timeout: float | None = None,
        **options: Unpack[TaskOptions],
    ) -> task_pb2.Task:
        """Enqueues one task of `kind` with `input` (any JSON value) and returns it.

        `request_id` defaults to a fresh one, so a retry after UNAVAILABLE returns the
        first result; pass your own to dedupe retries across processes, or "" for none.
        """
        request = req.create_task(project or self.project, kind, input, request_id, options)
        return self.tasks.CreateTask(request, timeout=timeout)

    def batch_create_tasks(
        self,
        tasks: Iterable[task_pb2.Task | TaskSpec],
        *,
        atomic: bool = False,
        project: str | None = None,
        timeout: float | None = None,
    ) -> task_service_pb2.BatchCreateTasksResponse:
        """Enqueues up to 1000 tasks (Task messages or TaskSpec dicts) in one call.

        Each result holds `task`, `existing_task` (a dedupe hit) or `status`; with
        `atomic` any bad item fails the whole call and nothing is created.
        """
        request = req.batch_create_tasks(project or self.project, tasks, atomic)
        return self.tasks.BatchCreateTasks(request, timeout=timeout)

    def get_task(self, name: str, *, timeout: float | None = None) -> task_pb2.Task:
        request = task_service_pb2.GetTaskRequest(name=req.child(self.project, "tasks", name))
        return self.tasks.GetTask(request, timeout=timeout)

    def list_tasks(
        self,
        *,
        filter: task_pb2.TaskFilter | None = None,
        order_by: str = "",
        page_size: int = 0,
        project: str | None = None,
        timeout: float | None = None,
        **criteria: Unpack[TaskCriteria],
    ) -> Iterator[task_pb2.Task]:
        """Every task matching `filter` and the criteria, fetched a page at a time."""
        token = ""
        while True:
            page = self.list_tasks_page(
                filter=filter,
                order_by=order_by,
                page_size=page_size,
                page_token=token,
                project=project,
                timeout=timeout,
                **criteria,
            )
            yield from page.tasks
            token = page.next_page_token
            if not token:
                return

    def list_tasks_page(
        self,
        *,
        filter: task_pb2.TaskFilter | None = None,
        order_by: str = "",
        page_size: int = 0,
        page_token: str = "",
        project: str | None = None,
        timeout: float | None = None,
        **criteria: Unpack[TaskCriteria],
    ) -> task_service_pb2.ListTasksResponse:
        """One page of tasks and the token of the next ("" on the last page)."""
        request = req.list_tasks(
            project or self.project, filter, criteria, order_by, page_size, page_token
        )
        return self.tasks.ListTasks(request, timeout=timeout)

    def wait_for_task(self, name: str, *, timeout: float = 60.0) -> task_pb2.Task:
        """Polls the task until it is terminal and returns it; TimeoutError after `timeout`."""
        deadline = time.monotonic() + timeout
        for delay in req.poll_delays():
            task = self.get_task(name)
            if task.state in req.TERMINAL_STATES:
                return task
            if time.monotonic() + delay > deadline:
                raise TimeoutError(f"{task.name} is still {req.state_name(task.state)}")
            time.sleep(delay)
        raise AssertionError("unreachable")

    def cancel_task(
        self, name: str, reason: str = "", *, timeout: float | None = None
    ) -> task_pb2.Task:
        """Cancels a waiting task at once, or asks a running one's worker to stop."""
        request = task_service_pb2.CancelTaskRequest(
            name=req.child(self.project, "tasks", name), reason=reason
        )
        return self.tasks.CancelTask(request, timeout=timeout)

    # Queues.

    def get_queue(self, name: str, *, timeout: float | None = None) -> queue_pb2.Queue:
        request = queue_pb2.GetQueueRequest(name=req.child(self.project, "queues", name))
        return self.queues.GetQueue(request, timeout=timeout)

    def list_queues(
        self, *, page_size: int = 0, project: str | None = None, timeout: float | None = None
    ) -> Iterator[queue_pb2.Queue]:
        token = ""
        while True:
            page = self.queues.ListQueues(
                queue_pb2.ListQueuesRequest(
                    parent=req.parent(project or self.project),
                    page_size=page_size,
                    page_token=token,
                ),
                timeout=timeout,
            )
            yield from page.queues
            token = page.next_page_token
            if not token:
                return

    def pause_queue(
        self, name: str, reason: str = "", *, timeout: float | None = None
    ) -> queue_pb2.Queue:
        request = queue_pb2.PauseQueueRequest(
            name=req.child(self.project, "queues", name), reason=reason
        )
        return self.queues.PauseQueue(request, timeout=timeout)

    def resume_queue(self, name: str, *, timeout: float | None = None) -> queue_pb2.Queue:
        request = queue_pb2.ResumeQueueRequest(name=req.child(self.project, "queues", name))
        return self.queues.ResumeQueue(request, timeout=timeout)

    def update_queue(
        self,
        name: str,
        *,
        max_concurrency: int | None = None,
        rate_limit: str | None = None,
        default_retry_policy: task_pb2.RetryPolicy | Mapping[str, Any] | None = None,
        execution_timeout: Seconds | None = None,
        finished_task_ttl: Seconds | None = None,
        max_log_bytes: int | None = None,
        max_log_lines: int | None = None,
        redact_paths: Sequence[str] | None = None,
        timeout: float | None = None,
    ) -> queue_pb2.Queue:
        """Changes the settings given (and only those); an execution_timeout of 0 clears
        the queue's default; a finished_task_ttl of 0 keeps its finished tasks forever;
        a max_log_bytes or max_log_lines of 0 is the server's default bound;
        redact_paths (JSON Pointers or bare keys) replace the queue's, [] clears them."""
        request = req.update_queue(
            self.project,
            name,
            max_concurrency,
            rate_limit,
            default_retry_policy,
            execution_timeout,
            finished_task_ttl,
            (max_log_bytes, max_log_lines),
            redact_paths,
        )
        return self.queues.UpdateQueue(request, timeout=timeout)

    # Workers.

    def get_worker(self, name: str, *, timeout: float | None = None) -> worker_pb2.Worker:
        request = worker_pb2.GetWorkerRequest(name=req.child(self.project, "workers", name))
        return self.workers.GetWorker(request, timeout=timeout)

    def list_workers(
        self, *, page_size: int = 0, project: str | None = None, timeout: float | None = None
    ) -> Iterator[worker_pb2.Worker]:
        token = ""
        while True:
            page = self.workers.ListWorkers(
                worker_pb2.ListWorkersRequest(
                    parent=req.parent(project or self.project),
                    page_size=page_size,
                    page_token=token,
                ),
                timeout=timeout,
            )
            yield from page.workers
            token = page.next_page_token
            if not token:
                return

    # Projects and keys.

    def create_project(
        self, project_id: str, *, display_name: str = "", callback_url: str = ""
    ) -> project_pb2.Project:
        return self.projects.CreateProject(
            project_pb2.CreateProjectRequest(
                project_id=project_id,
                project=project_pb2.Project(display_name=display_name, callback_url=callback_url),
            )
        )

    def get_project(self, name: str) -> project_pb2.Project:
        return self.projects.GetProject(project_pb2.GetProjectRequest(name=req.parent(name)))

    def list_projects(self, *, page_size: int = 0) -> Iterator[project_pb2.Project]:
        token = ""
        while True:
            page = self.projects.ListProjects(
                project_pb2.ListProjectsRequest(page_size=page_size, page_token=token)
            )
            yield from page.projects
            token = page.next_page_token
            if not token:
                return

    def create_api_key(
        self,
        parent: str,
        role: enums_pb2.Role.ValueType,
        *,
        display_name: str = "",
        rate_limits: project_pb2.RateLimits | None = None,
    ) -> project_pb2.ApiKey:
        """Mints a key; its `secret` is in this answer only. `rate_limits` overrides the
        project's request limits for this key."""
        return self.projects.CreateApiKey(
            project_pb2.CreateApiKeyRequest(
                parent=req.parent(parent),
                api_key=project_pb2.ApiKey(
                    role=role, display_name=display_name, rate_limits=rate_limits
                ),
            )
        )

    def delete_api_key(self, name: str) -> None:
        self.projects.DeleteApiKey(project_pb2.DeleteApiKeyRequest(name=name))
