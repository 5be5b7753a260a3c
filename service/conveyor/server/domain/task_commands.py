"""Commands on tasks and queues: retry one task, retry a filtered batch in the
background, and the confirmed purge of a queue.

Each command is recorded (domain/audit.py) in the transaction that carries it out, so a
command that fails validation or a precondition leaves no trace and changes nothing.
BatchRetryTasks records an ISSUED command and then works in chunks in the background
(`BatchJobs`), writing its progress on the command.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import uuid
from collections.abc import Awaitable
from dataclasses import replace
from typing import Any

from psycopg_pool import AsyncConnectionPool

from conveyor.client._json import message_to_json
from conveyor.server import states
from conveyor.server.domain import audit, names, task_input, task_list
from conveyor.server.domain.auth import Principal
from conveyor.server.domain.bulk_actions import BulkLimiter
from conveyor.server.domain.command_input import check_idempotency_key, parent_project
from conveyor.server.domain.queues import parse_queue_name, purge_confirm_token
from conveyor.server.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PreconditionViolation,
    Violations,
)
from conveyor.server.logging import get_logger
from conveyor.server.store import commands as command_store
from conveyor.server.store import queues as queue_store
from conveyor.server.store import task_commands as task_command_store
from conveyor.server.store import tasks as task_store
from conveyor.server.store.commands import CommandRow
from conveyor.v1 import command_pb2, enums_pb2, task_pb2

__all__ = ["BatchJobs", "TaskCommands"]

_log = get_logger(__name__)

MAX_OVERRIDE_INPUT = 64 * 1024
MAX_BATCH_RETRY = 10_000
BATCH_CHUNK = 200
BATCH_PAUSE = 0.02
"""Seconds between chunks: each chunk is its own short transaction, so leases interleave."""
_RETRYABLE = [s.value for s in states.sources("requeue")]


class BatchJobs:
    """The replica's running BatchRetryTasks jobs (a BackgroundLoop: stop cancels them)."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, coroutine: Any) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task


class TaskCommands:
    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        server_key: bytes,
        jobs: BatchJobs | None = None,
        *,
        chunk: int = BATCH_CHUNK,
        pause: float = BATCH_PAUSE,
    ) -> None:
        self._pool = pool
        self._key = server_key
        self.jobs = jobs or BatchJobs()
        self._chunk = chunk
        self._pause = pause
        self._bulk = BulkLimiter(pool)  # BatchRetryTasks, PurgeQueue: one per project

    async def retry_task(
        self,
        principal: Principal,
        request: command_pb2.RetryTaskRequest,
    ) -> CommandRow:
        project = parent_project(request.parent)
        v = Violations()
        task_id = None
        try:
            parsed = task_input.parse_task_name(request.task, "task")
            if parsed.project != project:
                v.add("task", f"must be a task of {request.parent}")
            task_id = uuid.UUID(parsed.id)
        except InvalidArgument as error:
            v.items.extend(error.violations)
        input_json = None
        if request.HasField("override_input"):
            input_json = task_input.json_text(
                v, request.override_input, "override_input", MAX_OVERRIDE_INPUT
            )
        key = check_idempotency_key(v, request.idempotency_key)
        v.raise_if_any()
        assert task_id is not None
        args: dict[str, Any] = {"task": request.task}
        if input_json is not None:
            args["override_input"] = True
        async with audit.command(
            self._pool,
            self._key,
            principal,
            enums_pb2.COMMAND_VERB_RETRY_TASK,
            request.task,
            args,
            project=project,
            idempotency_key=key,
        ) as issued:
            if issued.existing:
                return issued.command
            conn, command = issued.conn, issued.command
            rows = await task_command_store.requeue(
                conn,
                project,
                [task_id],
                sources=_RETRYABLE,
                reason="retried",
                command=command.name,
                input_json=input_json,
            )
            if not rows:
                current = await task_store.get_row(conn, project, task_id)
                if current is None:
                    raise NotFound(
                        f"{request.task} does not exist", metadata={"resource": request.task}
                    )
                states.target(states.State(current.state), "requeue", subject=request.task)
                raise FailedPrecondition(
                    f"{request.task} changed state meanwhile; try again",
                    reason="TASK_STATE_CONFLICT",
                    violations=[PreconditionViolation("STATE", request.task, "it changed state")],
                )
            result = {"task": request.task, "attempt": rows[0].attempt + 1}
            await command_store.set_status(
                conn,
                project,
                command.sequence,
                status="SUCCEEDED",
                sources=["SUCCEEDED"],
                result=result,
                quiet=True,
            )
            return replace(command, result=result)

    async def batch_retry(
        self, principal: Principal, request: command_pb2.BatchRetryTasksRequest
    ) -> CommandRow:
        project = parent_project(request.parent)
        v = Violations()
        if not 1 <= request.max <= MAX_BATCH_RETRY:
            v.add("max", f"must be between 1 and {MAX_BATCH_RETRY}")
        query = task_list.parse_filter(v, request.filter, project, me=principal.key_name)
        key = check_idempotency_key(v, request.idempotency_key)
        v.raise_if_any()
        wanted = [s for s in (query.states or _RETRYABLE) if s in _RETRYABLE]
        args: dict[str, Any] = {
            "filter": _filter_json(request.filter),
            "max": request.max,
        }
        if key:
            # A replay answers with the first command, even while its job holds the
            # project's bulk slot (audit.record checks again under the chain's lock).
            async with self._pool.connection() as conn:
                first = await command_store.get_by_key(conn, project, principal.key_name, key)
            if first is not None:
                return first
        # The bulk slot is taken before the command is recorded (a refusal records
        # nothing) and held by the job until it ends.
        slot = contextlib.AsyncExitStack()
        await slot.enter_async_context(self._bulk.hold(project, "BatchRetryTasks"))
        try:
            async with audit.command(
                self._pool,
                self._key,
                principal,
                enums_pb2.COMMAND_VERB_BATCH_RETRY_TASKS,
                request.parent,
                args,
                project=project,
                idempotency_key=key,
                status="ISSUED",
                result={"retried": 0, "skipped": 0, "done": False},
            ) as issued:
                command = issued.command
        except BaseException:
            await slot.aclose()
            raise
        if issued.existing:
            await slot.aclose()
            return command
        query = replace(query, states=wanted, limit=self._chunk, order="id")
        self.jobs.spawn(
            self._holding(slot, self._run_batch(command, query, request.max, bool(wanted)))
        )
        return command

    @staticmethod
    async def _holding(slot: contextlib.AsyncExitStack, job: Awaitable[None]) -> None:
        """Runs `job`, then gives back the bulk slot it was started under."""
        try:
            await job
        finally:
            await slot.aclose()

    async def _run_batch(
        self, command: CommandRow, query: task_store.TaskQuery, maximum: int, any_state: bool
    ) -> None:
        project, retried, skipped, after = command.project, 0, 0, None
        try:
            while any_state and retried + skipped < maximum:
                limit = min(self._chunk, maximum - retried - skipped)
                async with self._pool.connection() as conn, conn.transaction():
                    rows = await task_store.list_page(
                        conn, replace(query, limit=limit, after_id=after)
                    )
                    if not rows:
                        break
                    after = rows[-1].id
                    done = await task_command_store.requeue(
                        conn,
                        project,
                        [r.id for r in rows],
                        sources=_RETRYABLE,
                        reason="retried",
                        command=command.name,
                    )
                    retried += len(done)
                    skipped += len(rows) - len(done)
                    await command_store.set_status(
                        conn,
                        project,
                        command.sequence,
                        status="ISSUED",
                        sources=["ISSUED"],
                        result={"retried": retried, "skipped": skipped},
                        quiet=True,
                    )
                if len(rows) < limit:
                    break
                await asyncio.sleep(self._pause)
            async with self._pool.connection() as conn, conn.transaction():
                await command_store.set_status(
                    conn,
                    project,
                    command.sequence,
                    status="SUCCEEDED",
                    sources=["ISSUED"],
                    result={"retried": retried, "skipped": skipped, "done": True},
                )
        except asyncio.CancelledError:
            raise
        except Exception as error:
            _log.exception("batch retry failed", command=command.name)
            with contextlib.suppress(Exception):
                async with self._pool.connection() as conn, conn.transaction():
                    await command_store.set_status(
                        conn,
                        project,
                        command.sequence,
                        status="FAILED",
                        sources=["ISSUED"],
                        result={"retried": retried, "skipped": skipped, "done": True},
                        error={"code": 13, "message": str(error)},
                    )

    async def purge_queue(
        self, principal: Principal, request: command_pb2.PurgeQueueRequest
    ) -> CommandRow:
        project = parent_project(request.parent)
        v = Violations()
        if not request.queue:
            v.add("queue", "is required")
        else:
            names.check_queue(v, request.queue, "queue")
        if not request.force and not request.confirm_token:
            v.add("confirm_token", "is required unless force is set (GetQueue returns it)")
        key = check_idempotency_key(v, request.idempotency_key)
        v.raise_if_any()
        queue_name = f"projects/{project}/queues/{request.queue}"
        parse_queue_name(queue_name, "queue")
        args: dict[str, Any] = {"queue": request.queue, "force": request.force}
        async with self._pool.connection() as conn:
            if await queue_store.get(conn, project, request.queue) is None:
                raise NotFound(f"{queue_name} does not exist", metadata={"resource": queue_name})
        async with (
            self._bulk.hold(project, f"PurgeQueue of {request.queue}"),
            audit.command(
                self._pool,
                self._key,
                principal,
                enums_pb2.COMMAND_VERB_PURGE_QUEUE,
                queue_name,
                args,
                project=project,
                idempotency_key=key,
            ) as issued,
        ):
            if issued.existing:
                return issued.command
            conn, command = issued.conn, issued.command
            # The purge counts what it removes: the token must be for exactly that depth
            # (else the whole transaction, command included, rolls back).
            purged = await task_command_store.purge_queue(
                conn, project, request.queue, command=command.name
            )
            if not request.force and not hmac.compare_digest(
                request.confirm_token, purge_confirm_token(self._key, queue_name, purged)
            ):
                raise FailedPrecondition(
                    f"the queue's depth is now {purged}: get the queue again and confirm "
                    "with its new purge_confirm_token",
                    reason="PURGE_TOKEN_STALE",
                    metadata={"queued_depth": str(purged), "queue": queue_name},
                    violations=[
                        PreconditionViolation(
                            "PURGE_TOKEN",
                            queue_name,
                            f"the queue now holds {purged} queued tasks",
                        )
                    ],
                )
            result = {"purged": purged}
            await command_store.set_status(
                conn,
                project,
                command.sequence,
                status="SUCCEEDED",
                sources=["SUCCEEDED"],
                result=result,
                quiet=True,
            )
        # A forced purge is logged at critical by audit.command (Command.severity).
        return replace(command, result=result)


def _filter_json(task_filter: task_pb2.TaskFilter) -> dict[str, Any]:
    value: dict[str, Any] = message_to_json(task_filter)
    return value
