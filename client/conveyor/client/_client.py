"""Client and AsyncClient: typed stubs for every service over one channel."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from types import TracebackType

import grpc

from conveyor.client._calls import AsyncStreamInterceptor, AsyncUnaryInterceptor, SyncInterceptor
from conveyor.client._local import resolve
from conveyor.v1 import (
    command_pb2_grpc,
    enums_pb2,
    event_pb2_grpc,
    project_pb2,
    project_pb2_grpc,
    queue_pb2_grpc,
    schedule_pb2_grpc,
    task_service_pb2_grpc,
    worker_pb2_grpc,
)

DEFAULT_TIMEOUT = 30.0
_CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 30_000),
]


class Client:
    """A blocking client. `Client()` talks to the local server with its admin key.

    Every unary call gets `timeout` seconds unless the call passes its own
    `timeout=`; idempotent calls are retried on UNAVAILABLE; errors are raised as
    `conveyor.client.errors.ConveyorError` subclasses. The stubs (`tasks`,
    `queues`, `workers`, `schedules`, `commands`, `events`, `projects`) take
    the generated request messages.
    """

    def __init__(
        self,
        target: str | None = None,
        *,
        api_key: str | None = None,
        data_dir: str | os.PathLike[str] | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> None:
        self.target, self.api_key = resolve(target, api_key, data_dir)
        raw = grpc.insecure_channel(self.target, options=_CHANNEL_OPTIONS)
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
        return self.projects.GetProject(project_pb2.GetProjectRequest(name=name))

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
        self, parent: str, role: enums_pb2.Role.ValueType, *, display_name: str = ""
    ) -> project_pb2.ApiKey:
        """Mints a key; its `secret` is in this answer only."""
        return self.projects.CreateApiKey(
            project_pb2.CreateApiKeyRequest(
                parent=parent, api_key=project_pb2.ApiKey(role=role, display_name=display_name)
            )
        )

    def delete_api_key(self, name: str) -> None:
        self.projects.DeleteApiKey(project_pb2.DeleteApiKeyRequest(name=name))


class AsyncClient:
    """The asyncio twin of Client; use `async with AsyncClient() as client:`."""

    def __init__(
        self,
        target: str | None = None,
        *,
        api_key: str | None = None,
        data_dir: str | os.PathLike[str] | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> None:
        self.target, self.api_key = resolve(target, api_key, data_dir)
        self.channel = grpc.aio.insecure_channel(
            self.target,
            options=_CHANNEL_OPTIONS,
            interceptors=[
                AsyncUnaryInterceptor(self.api_key, timeout),
                AsyncStreamInterceptor(self.api_key, timeout),
            ],
        )
        self.tasks = task_service_pb2_grpc.TaskServiceStub(self.channel)
        self.queues = queue_pb2_grpc.QueueServiceStub(self.channel)
        self.workers = worker_pb2_grpc.WorkerServiceStub(self.channel)
        self.schedules = schedule_pb2_grpc.ScheduleServiceStub(self.channel)
        self.commands = command_pb2_grpc.CommandServiceStub(self.channel)
        self.events = event_pb2_grpc.EventServiceStub(self.channel)
        self.projects = project_pb2_grpc.ProjectServiceStub(self.channel)

    async def close(self) -> None:
        await self.channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def create_project(
        self, project_id: str, *, display_name: str = "", callback_url: str = ""
    ) -> project_pb2.Project:
        return await self.projects.CreateProject(
            project_pb2.CreateProjectRequest(
                project_id=project_id,
                project=project_pb2.Project(display_name=display_name, callback_url=callback_url),
            )
        )

    async def get_project(self, name: str) -> project_pb2.Project:
        return await self.projects.GetProject(project_pb2.GetProjectRequest(name=name))

    async def list_projects(self, *, page_size: int = 0) -> AsyncIterator[project_pb2.Project]:
        token = ""
        while True:
            page = await self.projects.ListProjects(
                project_pb2.ListProjectsRequest(page_size=page_size, page_token=token)
            )
            for project in page.projects:
                yield project
            token = page.next_page_token
            if not token:
                return

    async def create_api_key(
        self, parent: str, role: enums_pb2.Role.ValueType, *, display_name: str = ""
    ) -> project_pb2.ApiKey:
        return await self.projects.CreateApiKey(
            project_pb2.CreateApiKeyRequest(
                parent=parent, api_key=project_pb2.ApiKey(role=role, display_name=display_name)
            )
        )

    async def delete_api_key(self, name: str) -> None:
        await self.projects.DeleteApiKey(project_pb2.DeleteApiKeyRequest(name=name))
