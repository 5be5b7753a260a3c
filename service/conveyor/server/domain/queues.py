"""QueueService rules: reading queues with stats, pausing, resuming, updating settings.

Queues are created on first use: by the first task that names one, or by the first
Pause/Resume/UpdateQueue (configuring a queue before its tasks arrive, e.g. making it
sequential, must not race them). GetQueue of a queue never used is NOT_FOUND.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from typing import Any

from google.protobuf import duration_pb2
from psycopg_pool import AsyncConnectionPool

from conveyor.server.domain import (
    audit,
    names,
    paging,
    rates,
    retry_policy,
    task_input,
    task_log_bounds,
    update_mask,
)
from conveyor.server.domain.auth import Principal
from conveyor.server.domain.redaction import Redactions, check_paths
from conveyor.server.errors import InvalidArgument, NotFound, Violations
from conveyor.server.store import queues as queue_store
from conveyor.server.store.queues import QueueRow
from conveyor.v1 import enums_pb2, project_pb2, queue_pb2

__all__ = [
    "UPDATABLE_FIELDS",
    "Queues",
    "finished_task_ttl_ms",
    "optional_duration",
    "purge_confirm_token",
    "settings_message",
]

UPDATABLE_FIELDS = (
    "max_concurrency",
    "rate_limit",
    "default_retry_policy",
    "execution_timeout",
    "finished_task_ttl",
    "redact_paths",
    "max_log_bytes",
    "max_log_lines",
)
MAX_CONCURRENCY = 100_000
MAX_REASON = 1000
MIN_FINISHED_TASK_TTL_MS = 1000
MAX_FINISHED_TASK_TTL_MS = 3650 * 86_400_000


def purge_confirm_token(server_key: bytes, queue_name: str, queued: int) -> str:
    """HMAC-SHA256(server key, "<queue resource name>:<queued depth>") in hex.

    PurgeQueue recomputes it from the depth it sees: a token only matches while the
    depth the caller was shown is unchanged.
    """
    message = f"{queue_name}:{queued}".encode()
    return hmac.new(server_key, message, hashlib.sha256).hexdigest()


def _no_project(project: str) -> NotFound:
    # Only a system key can name a project that does not exist (authorisation first).
    return NotFound(
        f"projects/{project} does not exist", metadata={"resource": f"projects/{project}"}
    )


def parse_queue_name(value: str, field_path: str) -> names.Name:
    return names.parse(value, field_path, "queues", id_re=names.QUEUE_RE)


class Queues:
    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        server_key: bytes,
        redactions: Redactions | None = None,
    ) -> None:
        self._pool = pool
        self._server_key = server_key
        self._redactions = redactions

    def purge_token(self, row: QueueRow) -> str:
        return purge_confirm_token(self._server_key, row.name, row.queued)

    async def list_page(self, parent: str, size: int, token: str) -> tuple[list[QueueRow], str]:
        project = names.parse(parent, "parent").project
        limit = paging.page_size(size)
        after = str(paging.decode_token(token, ("id",))["id"]) if token else ""
        async with self._pool.connection() as conn:
            rows = await queue_store.list_page(conn, project, after=after, limit=limit + 1)
        next_token = paging.encode_token({"id": rows[limit - 1].id}) if len(rows) > limit else ""
        return rows[:limit], next_token

    async def get(self, name: str, field_path: str = "name") -> QueueRow:
        parsed = parse_queue_name(name, field_path)
        async with self._pool.connection() as conn:
            row = await queue_store.get(conn, parsed.project, parsed.id)
        if row is None:
            raise NotFound(f"{name} does not exist", metadata={"resource": name})
        return row

    async def _record(
        self,
        conn: Any,
        principal: Principal | None,
        verb: int,
        name: str,
        args: dict[str, Any],
        project: str,
    ) -> None:
        await audit.record_change(
            conn, self._server_key, principal, verb, name, args, project=project
        )

    async def pause(self, name: str, reason: str, principal: Principal | None = None) -> QueueRow:
        parsed = parse_queue_name(name, "name")
        v = Violations()
        task_input.check_text(v, reason, "reason", MAX_REASON)
        v.raise_if_any()
        async with self._pool.connection() as conn, conn.transaction():
            if await queue_store.pause(conn, parsed.project, parsed.id, reason=reason) is None:
                raise _no_project(parsed.project)
            await self._record(
                conn,
                principal,
                enums_pb2.COMMAND_VERB_PAUSE_QUEUE,
                name,
                {"reason": reason},
                parsed.project,
            )
        return await self.get(name)

    async def resume(self, name: str, principal: Principal | None = None) -> QueueRow:
        parsed = parse_queue_name(name, "name")
        async with self._pool.connection() as conn, conn.transaction():
            if await queue_store.resume(conn, parsed.project, parsed.id) is None:
                raise _no_project(parsed.project)
            await self._record(
                conn, principal, enums_pb2.COMMAND_VERB_RESUME_QUEUE, name, {}, parsed.project
            )
        return await self.get(name)

    async def update(
        self,
        queue: queue_pb2.Queue,
        mask_paths: Sequence[str],
        principal: Principal | None = None,
    ) -> QueueRow:
        """Changes the settings in the mask (AIP-134, see update_mask.py); nested paths
        such as default_retry_policy.max_attempts keep the policy's other fields."""
        name = queue.name
        parsed = parse_queue_name(name, "queue.name")
        mask = update_mask.resolve(mask_paths, queue, UPDATABLE_FIELDS, "queue")
        async with self._pool.connection() as conn, conn.transaction():
            merged = settings_message(await queue_store.get(conn, parsed.project, parsed.id))
            mask.merge(queue, merged)
            changes = _checked_changes(merged, mask)
            updated = await queue_store.update(
                conn,
                parsed.project,
                parsed.id,
                max_concurrency=changes.get("max_concurrency"),
                rate_limit=changes.get("rate_limit"),
                default_retry_policy=changes.get("default_retry_policy"),
                execution_timeout_ms=changes.get("execution_timeout_ms"),
                set_finished_task_ttl="finished_task_ttl_ms" in changes,
                finished_task_ttl_ms=changes.get("finished_task_ttl_ms"),
                redact_paths=changes.get("redact_paths"),
                max_log_bytes=changes.get("max_log_bytes"),
                max_log_lines=changes.get("max_log_lines"),
            )
            if updated:
                await self._record(
                    conn,
                    principal,
                    enums_pb2.COMMAND_VERB_UPDATE_QUEUE,
                    name,
                    {"update_mask": list(mask.paths), **changes},
                    parsed.project,
                )
        if not updated:
            raise _no_project(parsed.project)
        if "redact_paths" in changes and self._redactions is not None:
            self._redactions.forget(parsed.project)
        return await self.get(name, "queue.name")


def settings_message(row: QueueRow | None) -> queue_pb2.Queue:
    """The settable fields of a queue as a message (defaults for a queue never used):
    UpdateQueue's merge base, and what rpc.queues.queue_message adds the rest to."""
    if row is None:
        return queue_pb2.Queue()
    return queue_pb2.Queue(
        max_concurrency=row.max_concurrency,
        rate_limit=row.rate_limit,
        default_retry_policy=retry_policy.message(
            retry_policy.Policy.from_json(row.default_retry_policy)
        ),
        execution_timeout=optional_duration(row.execution_timeout_ms),
        finished_task_ttl=optional_duration(row.finished_task_ttl_ms),
        redact_paths=row.redact_paths,
        max_log_bytes=row.max_log_bytes or 0,
        max_log_lines=row.max_log_lines or 0,
    )


def optional_duration(ms: int | None) -> duration_pb2.Duration | None:
    """A stored optional duration (execution_timeout, finished_task_ttl) as a message;
    None (unset) when there is none."""
    if ms is None:
        return None
    return duration_pb2.Duration(seconds=ms // 1000, nanos=ms % 1000 * 1_000_000)


def _checked_changes(merged: queue_pb2.Queue, mask: update_mask.Mask) -> dict[str, Any]:
    """The new values of the masked settings, validated; INVALID_ARGUMENT names every
    bad field."""
    v = Violations()
    changes: dict[str, Any] = {}
    if "max_concurrency" in mask:
        if not 0 <= merged.max_concurrency <= MAX_CONCURRENCY:
            v.add("queue.max_concurrency", f"must be between 0 (unlimited) and {MAX_CONCURRENCY}")
        changes["max_concurrency"] = merged.max_concurrency
    if "rate_limit" in mask:
        try:
            changes["rate_limit"] = rates.normalise(merged.rate_limit, "queue.rate_limit")
        except InvalidArgument as error:
            v.items.extend(error.violations)
    if "default_retry_policy" in mask:
        policy = retry_policy.parse(v, merged.default_retry_policy, "queue.default_retry_policy")
        changes["default_retry_policy"] = policy.to_json()
    if "execution_timeout" in mask:
        timeout = merged.execution_timeout
        # Unset or zero clears it: tasks created later run without a limit.
        changes["execution_timeout_ms"] = (
            retry_policy.duration_ms(
                v,
                timeout,
                "queue.execution_timeout",
                low_ms=task_input.MIN_EXECUTION_TIMEOUT_MS,
                high_ms=task_input.MAX_EXECUTION_TIMEOUT_MS,
            )
            if timeout.seconds or timeout.nanos
            else 0
        )
    if "finished_task_ttl" in mask:
        changes["finished_task_ttl_ms"] = finished_task_ttl_ms(v, merged, "queue")
    if "redact_paths" in mask:
        changes["redact_paths"] = check_paths(v, merged.redact_paths, "queue.redact_paths")
    task_log_bounds.check_queue_bounds(v, merged, mask, changes)
    v.raise_if_any()
    return changes


def finished_task_ttl_ms(
    v: Violations, holder: queue_pb2.Queue | project_pb2.Project, prefix: str
) -> int | None:
    """A Queue's or Project's finished_task_ttl: None (unset: the default), 0 (kept
    forever) or the ttl in ms."""
    if not holder.HasField("finished_task_ttl"):
        return None
    ttl = holder.finished_task_ttl
    if not (ttl.seconds or ttl.nanos):
        return 0
    return retry_policy.duration_ms(
        v,
        ttl,
        f"{prefix}.finished_task_ttl",
        low_ms=MIN_FINISHED_TASK_TTL_MS,
        high_ms=MAX_FINISHED_TASK_TTL_MS,
    )
