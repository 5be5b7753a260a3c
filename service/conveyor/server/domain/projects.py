"""ProjectService rules: projects, API keys and webhook secrets."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from google.protobuf.message import Message
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from conveyor.server.domain import (
    audit,
    names,
    paging,
    request_ids,
    request_limits,
    update_mask,
    validate,
)
from conveyor.server.domain.auth import ROLE_NAMES, MintedKey, Principal, mint_key
from conveyor.server.domain.keys import Authenticator
from conveyor.server.domain.queues import finished_task_ttl_ms
from conveyor.server.domain.redaction import Redactions, check_paths
from conveyor.server.errors import AlreadyExists, InvalidArgument, NotFound, Violations
from conveyor.server.store import api_keys, projects
from conveyor.server.store.api_keys import KeyRow
from conveyor.server.store.projects import ProjectRow, SecretRow
from conveyor.v1 import enums_pb2, project_pb2

UPDATABLE_PROJECT_FIELDS = (
    "display_name",
    "callback_url",
    "labels",
    "finished_task_ttl",
    "redact_paths",
    "webhook_full_input",
    "rate_limits",
)
UPDATABLE_KEY_FIELDS = ("display_name", "rate_limits")
DEFAULT_GRACE = timedelta(hours=24)
MAX_GRACE = timedelta(days=7)


@dataclass(frozen=True)
class ProjectFields:
    display_name: str
    callback_url: str
    labels: dict[str, str]


def new_webhook_secret() -> str:
    return "whsec_" + secrets.token_hex(32)


def _check_fields(
    v: Violations,
    fields: ProjectFields,
    prefix: str,
    paths: Sequence[str] = UPDATABLE_PROJECT_FIELDS,
) -> None:
    """Checks the fields named by paths (an update ignores the ones its mask leaves out)."""
    if "display_name" in paths:
        validate.text(v, fields.display_name, f"{prefix}.display_name", validate.MAX_DISPLAY_NAME)
    if "callback_url" in paths:
        validate.url(v, fields.callback_url, f"{prefix}.callback_url")
    if "labels" in paths:
        validate.labels(v, fields.labels, f"{prefix}.labels")


class Projects:
    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        authenticator: Authenticator,
        server_key: bytes = b"",
        redactions: Redactions | None = None,
    ) -> None:
        self._pool = pool
        self._authenticator = authenticator
        self._server_key = server_key
        self._redactions = redactions

    async def _audit(
        self,
        conn: AsyncConnection[Any],
        principal: Principal | None,
        verb: int,
        target: str,
        args: dict[str, Any],
    ) -> None:
        """Records the change in the target project's audit chain (DESIGN.md: Command)."""
        if principal is not None:
            project = names.project_of(target) or principal.project
            await audit.record_change(
                conn, self._server_key, principal, verb, target, args, project=project
            )

    async def create(
        self,
        project_id: str,
        fields: ProjectFields,
        principal: Principal | None = None,
        request_id: str = "",
        request_hash: str = "",
    ) -> ProjectRow:
        v = Violations()
        if not names.ID_RE.match(project_id):
            v.add("project_id", names.ID_RULE)
        _check_fields(v, fields, "project")
        request_ids.check(v, request_id)
        v.raise_if_any()
        async with self._pool.connection() as conn, conn.transaction():
            # Projects have no parent project: their request ids live under "".
            earlier = await request_ids.claim(conn, "", "CreateProject", request_id, request_hash)
            if earlier is not None:
                found = await projects.get(conn, earlier.rsplit("/", 1)[-1])
                if found is None:
                    raise NotFound(f"{earlier} no longer exists", metadata={"resource": earlier})
                return found
            row = await projects.insert(
                conn,
                id=project_id,
                display_name=fields.display_name,
                callback_url=fields.callback_url,
                labels=fields.labels,
                webhook_secret=new_webhook_secret(),
            )
            if row is None:
                raise AlreadyExists(
                    f"project {project_id} already exists", metadata={"project": project_id}
                )
            await self._audit(
                conn,
                principal,
                enums_pb2.COMMAND_VERB_CREATE_PROJECT,
                f"projects/{project_id}",
                {"display_name": fields.display_name, "callback_url": fields.callback_url},
            )
            await request_ids.made(conn, "", "CreateProject", request_id, f"projects/{project_id}")
        return row

    async def get(self, name: str) -> ProjectRow:
        parsed = names.parse(name, "name")
        async with self._pool.connection() as conn:
            row = await projects.get(conn, parsed.project)
        if row is None:
            raise NotFound(f"{name} does not exist", metadata={"resource": name})
        return row

    async def list_page(
        self, principal: Principal, size: int, token: str
    ) -> tuple[list[ProjectRow], str]:
        limit = paging.page_size(size)
        after = paging.decode_token(token, ("id",))["id"] if token else ""
        only = None if principal.system else principal.project
        async with self._pool.connection() as conn:
            rows = await projects.list_page(conn, after=str(after), limit=limit + 1, only=only)
        next_token = paging.encode_token({"id": rows[limit - 1].id}) if len(rows) > limit else ""
        return rows[:limit], next_token

    async def update(
        self,
        project: project_pb2.Project,
        mask_paths: Sequence[str],
        principal: Principal | None = None,
    ) -> ProjectRow:
        """Changes the fields in the mask (AIP-134, see update_mask.py)."""
        name = project.name
        parsed = names.parse(name, "project.name")
        mask = update_mask.resolve(mask_paths, project, UPDATABLE_PROJECT_FIELDS, "project")
        fields = ProjectFields(project.display_name, project.callback_url, dict(project.labels))
        v = Violations()
        _check_fields(v, fields, "project", mask.fields)
        ttl_ms = finished_task_ttl_ms(v, project, "project")
        redact_paths = (
            check_paths(v, project.redact_paths, "project.redact_paths")
            if "redact_paths" in mask
            else None
        )
        v.raise_if_any()
        async with self._pool.connection() as conn, conn.transaction():
            limits = None
            if "rate_limits" in mask:
                stored = await projects.lock(conn, parsed.project)
                if stored is None:
                    raise NotFound(f"{name} does not exist", metadata={"resource": name})
                limits = _checked_limits(stored, project, mask, "project")
            row = await projects.update(
                conn,
                parsed.project,
                display_name=fields.display_name if "display_name" in mask else None,
                callback_url=fields.callback_url if "callback_url" in mask else None,
                labels=fields.labels if "labels" in mask else None,
                set_finished_task_ttl="finished_task_ttl" in mask,
                finished_task_ttl_ms=ttl_ms,
                redact_paths=redact_paths,
                webhook_full_input=(
                    project.webhook_full_input if "webhook_full_input" in mask else None
                ),
                rate_limits=limits,
            )
            if row is None:
                raise NotFound(f"{name} does not exist", metadata={"resource": name})
            await self._audit(
                conn,
                principal,
                enums_pb2.COMMAND_VERB_UPDATE_PROJECT,
                name,
                {"update_mask": list(mask.paths)},
            )
        if limits is not None:
            self._authenticator.forget_project(parsed.project)
        if self._redactions is not None:
            self._redactions.forget(parsed.project)
        return row

    async def create_key(
        self,
        parent: str,
        role: int,
        display_name: str,
        principal: Principal | None = None,
        request_id: str = "",
        request_hash: str = "",
        rate_limits: project_pb2.RateLimits | None = None,
    ) -> tuple[KeyRow, MintedKey | None]:
        """The new key and its secret; a retry by request_id gets the first key and no
        secret (only its hash is stored)."""
        parsed = names.parse(parent, "parent")
        v = Violations()
        if role not in ROLE_NAMES:
            v.add(
                "api_key.role", "must be one of ROLE_VIEWER, ROLE_WORKER, ROLE_OPERATOR, ROLE_ADMIN"
            )
        validate.text(v, display_name, "api_key.display_name", validate.MAX_DISPLAY_NAME)
        limits = rate_limits or project_pb2.RateLimits()
        request_limits.check(v, limits, "api_key.rate_limits")
        request_ids.check(v, request_id)
        v.raise_if_any()
        minted = mint_key()
        async with self._pool.connection() as conn, conn.transaction():
            if await projects.get(conn, parsed.project) is None:
                raise NotFound(f"{parent} does not exist", metadata={"resource": parent})
            earlier = await request_ids.claim(
                conn, parsed.project, "CreateApiKey", request_id, request_hash
            )
            if earlier is not None:
                found = await api_keys.get(
                    conn, project=parsed.project, id=earlier.rsplit("/", 1)[-1]
                )
                if found is None:
                    raise NotFound(f"{earlier} no longer exists", metadata={"resource": earlier})
                return found, None
            row = await api_keys.insert(
                conn,
                id=minted.key_id,
                project=parsed.project,
                role=ROLE_NAMES[role],
                display_name=display_name,
                secret_hash=minted.secret_hash,
                rate_limits=request_limits.to_json(limits),
            )
            # The secret never enters the audit log; the key's name and role do.
            await self._audit(
                conn,
                principal,
                enums_pb2.COMMAND_VERB_CREATE_API_KEY,
                f"projects/{parsed.project}/apiKeys/{minted.key_id}",
                {"role": ROLE_NAMES[role], "display_name": display_name},
            )
            await request_ids.made(
                conn,
                parsed.project,
                "CreateApiKey",
                request_id,
                f"projects/{parsed.project}/apiKeys/{minted.key_id}",
            )
        return row, minted

    async def list_keys(self, parent: str, size: int, token: str) -> tuple[list[KeyRow], str]:
        parsed = names.parse(parent, "parent")
        limit = paging.page_size(size)
        after = paging.decode_token(token, ("id",))["id"] if token else ""
        async with self._pool.connection() as conn:
            rows = await api_keys.list_page(
                conn, project=parsed.project, after=str(after), limit=limit + 1
            )
        next_token = paging.encode_token({"id": rows[limit - 1].id}) if len(rows) > limit else ""
        return rows[:limit], next_token

    async def update_key(
        self, principal: Principal, key: project_pb2.ApiKey, mask_paths: Sequence[str]
    ) -> KeyRow:
        """Changes the key's fields in the mask (AIP-134); the new limits apply at once
        on this replica, within the key cache's lifetime on the others."""
        name = key.name
        parsed = names.parse(name, "api_key.name", "apiKeys")
        mask = update_mask.resolve(mask_paths, key, UPDATABLE_KEY_FIELDS, "api_key")
        v = Violations()
        if "display_name" in mask:
            validate.text(v, key.display_name, "api_key.display_name", validate.MAX_DISPLAY_NAME)
        v.raise_if_any()
        missing = NotFound(f"{name} does not exist", metadata={"resource": name})
        async with self._pool.connection() as conn, conn.transaction():
            limits = None
            if "rate_limits" in mask:
                if await projects.lock(conn, parsed.project) is None:
                    raise missing
                current = await api_keys.get(conn, project=parsed.project, id=parsed.id)
                if current is None:
                    raise missing
                limits = _checked_limits(current.rate_limits, key, mask, "api_key")
            row = await api_keys.update(
                conn,
                project=parsed.project,
                id=parsed.id,
                allow_system=principal.system,
                display_name=key.display_name if "display_name" in mask else None,
                rate_limits=limits,
            )
            if row is None:
                # A system key is reported missing to project admins, as on delete.
                raise missing
            await self._audit(
                conn,
                principal,
                enums_pb2.COMMAND_VERB_UPDATE_API_KEY,
                name,
                {"update_mask": list(mask.paths), "rate_limits": row.rate_limits},
            )
        self._authenticator.forget(parsed.id)
        return row

    async def delete_key(self, principal: Principal, name: str) -> None:
        parsed = names.parse(name, "name", "apiKeys")
        async with self._pool.connection() as conn, conn.transaction():
            deleted = await api_keys.delete(
                conn, project=parsed.project, id=parsed.id, allow_system=principal.system
            )
            if not deleted:
                # A system key is reported as missing to project admins: they may not
                # learn of it, let alone revoke it.
                raise NotFound(f"{name} does not exist", metadata={"resource": name})
            await self._audit(conn, principal, enums_pb2.COMMAND_VERB_DELETE_API_KEY, name, {})
        self._authenticator.forget(parsed.id)

    async def get_secret(self, name: str) -> SecretRow:
        parsed = names.parse_singleton(name, "name", "webhookSecret")
        async with self._pool.connection() as conn:
            row = await projects.get_secret(conn, parsed.project)
        if row is None:
            raise NotFound(f"projects/{parsed.project} does not exist")
        return row

    async def rotate_secret(
        self, name: str, grace: timedelta | None, principal: Principal | None = None
    ) -> SecretRow:
        parsed = names.parse_singleton(name, "name", "webhookSecret")
        if grace is None:
            grace = DEFAULT_GRACE
        if grace < timedelta(0) or grace > MAX_GRACE:
            raise InvalidArgument.of("grace_period", "must be between 0 and 7 days")
        async with self._pool.connection() as conn, conn.transaction():
            row = await projects.rotate_secret(
                conn, parsed.project, secret=new_webhook_secret(), grace=grace
            )
            if row is None:
                raise NotFound(f"projects/{parsed.project} does not exist")
            await self._audit(
                conn,
                principal,
                enums_pb2.COMMAND_VERB_ROTATE_WEBHOOK_SECRET,
                name,
                {"grace_seconds": grace.total_seconds()},
            )
        return row


def _checked_limits(
    stored: dict[str, Any], resource: Message, mask: update_mask.Mask, prefix: str
) -> dict[str, Any]:
    """The stored rate_limits with the update's applied, as stored; raises
    InvalidArgument (and the caller's transaction changes nothing) when out of range."""
    limits = request_limits.merged(stored, resource, mask)
    v = Violations()
    request_limits.check(v, limits, f"{prefix}.rate_limits")
    v.raise_if_any()
    return request_limits.to_json(limits)
