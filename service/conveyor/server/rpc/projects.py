"""ProjectService: projects, API keys and webhook secrets."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import empty_pb2

from conveyor.server.domain import request_limits
from conveyor.server.domain.auth import ROLE_BY_NAME
from conveyor.server.domain.projects import ProjectFields, Projects
from conveyor.server.domain.queues import optional_duration
from conveyor.server.domain.request_ids import request_hash
from conveyor.server.render.convert import timestamp
from conveyor.server.rpc import principal
from conveyor.server.store.api_keys import KeyRow
from conveyor.server.store.projects import ProjectRow, SecretRow
from conveyor.v1 import project_pb2, project_pb2_grpc

Context = grpc.aio.ServicerContext[Any, Any]


def project_message(row: ProjectRow) -> project_pb2.Project:
    return project_pb2.Project(
        name=f"projects/{row.id}",
        display_name=row.display_name,
        callback_url=row.callback_url,
        labels=row.labels,
        finished_task_ttl=optional_duration(row.finished_task_ttl_ms),
        redact_paths=row.redact_paths,
        webhook_full_input=row.webhook_full_input,
        create_time=timestamp(row.create_time),
        update_time=timestamp(row.update_time),
        rate_limits=request_limits.from_json(row.rate_limits),
    )


def key_message(row: KeyRow, secret: str = "") -> project_pb2.ApiKey:
    return project_pb2.ApiKey(
        name=f"projects/{row.project}/apiKeys/{row.id}",
        role=ROLE_BY_NAME[row.role],  # type: ignore[arg-type]
        display_name=row.display_name,
        secret=secret,
        create_time=timestamp(row.create_time),
        last_used_time=timestamp(row.last_used_time),
        rate_limits=request_limits.from_json(row.rate_limits),
    )


def secret_message(project: str, row: SecretRow) -> project_pb2.WebhookSecret:
    return project_pb2.WebhookSecret(
        name=f"projects/{project}/webhookSecret",
        secret=row.webhook_secret,
        previous_secret=row.previous_webhook_secret or "",
        previous_expire_time=timestamp(row.previous_secret_expire_time),
    )


def _fields(project: project_pb2.Project) -> ProjectFields:
    return ProjectFields(
        display_name=project.display_name,
        callback_url=project.callback_url,
        labels=dict(project.labels),
    )


class ProjectServicer(project_pb2_grpc.ProjectServiceServicer):
    def __init__(self, projects: Projects) -> None:
        self._projects = projects

    async def CreateProject(
        self, request: project_pb2.CreateProjectRequest, context: Context
    ) -> project_pb2.Project:
        row = await self._projects.create(
            request.project_id,
            _fields(request.project),
            principal.current(),
            request.request_id,
            request_hash(request),
        )
        return project_message(row)

    async def GetProject(
        self, request: project_pb2.GetProjectRequest, context: Context
    ) -> project_pb2.Project:
        return project_message(await self._projects.get(request.name))

    async def ListProjects(
        self, request: project_pb2.ListProjectsRequest, context: Context
    ) -> project_pb2.ListProjectsResponse:
        rows, token = await self._projects.list_page(
            principal.current(), request.page_size, request.page_token
        )
        return project_pb2.ListProjectsResponse(
            projects=[project_message(r) for r in rows], next_page_token=token
        )

    async def UpdateProject(
        self, request: project_pb2.UpdateProjectRequest, context: Context
    ) -> project_pb2.Project:
        row = await self._projects.update(
            request.project, request.update_mask.paths, principal.current()
        )
        return project_message(row)

    async def CreateApiKey(
        self, request: project_pb2.CreateApiKeyRequest, context: Context
    ) -> project_pb2.ApiKey:
        row, minted = await self._projects.create_key(
            request.parent,
            request.api_key.role,
            request.api_key.display_name,
            principal.current(),
            request.request_id,
            request_hash(request),
            rate_limits=request.api_key.rate_limits,
        )
        return key_message(row, secret=minted.token if minted is not None else "")

    async def UpdateApiKey(
        self, request: project_pb2.UpdateApiKeyRequest, context: Context
    ) -> project_pb2.ApiKey:
        row = await self._projects.update_key(
            principal.current(), request.api_key, request.update_mask.paths
        )
        return key_message(row)

    async def ListApiKeys(
        self, request: project_pb2.ListApiKeysRequest, context: Context
    ) -> project_pb2.ListApiKeysResponse:
        rows, token = await self._projects.list_keys(
            request.parent, request.page_size, request.page_token
        )
        return project_pb2.ListApiKeysResponse(
            api_keys=[key_message(r) for r in rows], next_page_token=token
        )

    async def DeleteApiKey(
        self, request: project_pb2.DeleteApiKeyRequest, context: Context
    ) -> empty_pb2.Empty:
        await self._projects.delete_key(principal.current(), request.name)
        return empty_pb2.Empty()

    async def GetWebhookSecret(
        self, request: project_pb2.GetWebhookSecretRequest, context: Context
    ) -> project_pb2.WebhookSecret:
        row = await self._projects.get_secret(request.name)
        return secret_message(request.name.split("/")[1], row)

    async def RotateWebhookSecret(
        self, request: project_pb2.RotateWebhookSecretRequest, context: Context
    ) -> project_pb2.WebhookSecret:
        grace = request.grace_period.ToTimedelta() if request.HasField("grace_period") else None
        row = await self._projects.rotate_secret(request.name, grace, principal.current())
        return secret_message(request.name.split("/")[1], row)
