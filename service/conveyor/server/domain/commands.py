"""CommandService rules: retry, bulk retry, confirmed purge, worker control, reading and
verifying the audit log.

Each command is recorded (domain/audit.py) in the transaction that carries it out, so a
command that fails validation or a precondition leaves no trace and changes nothing.
BatchRetryTasks records an ISSUED command and then works in chunks in the background
(`BatchJobs`), writing its progress on the command; worker-control commands stay ISSUED
until a worker's Connect stream takes them (DISPATCHED) and acknowledges them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import uuid
from dataclasses import replace
from datetime import timedelta
from typing import Any

from google.protobuf import json_format
from psycopg_pool import AsyncConnectionPool

from conveyor.server.domain import audit, names, paging, rates, states, task_input, task_list
from conveyor.server.domain.auth import Principal
from conveyor.server.domain.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PreconditionViolation,
    Violations,
)
from conveyor.server.domain.queues import parse_queue_name, purge_confirm_token
from conveyor.server.domain.workers import worker_id
from conveyor.server.logging import get_logger
from conveyor.server.store import commands as store
from conveyor.server.store import queues as queue_store
from conveyor.server.store import task_commands
from conveyor.server.store import tasks as task_store
from conveyor.server.store.commands import CommandQuery, CommandRow
from conveyor.v1 import command_pb2, enums_pb2, task_pb2

__all__ = ["BatchJobs", "Commands"]

_log = get_logger(__name__)

MAX_OVERRIDE_INPUT = 64 * 1024
MAX_BATCH_RETRY = 10_000
MAX_DELTA = 100
MAX_IDEMPOTENCY_KEY = 200
DEFAULT_TIMEOUT = timedelta(seconds=60)
MAX_TIMEOUT = timedelta(hours=24)
BATCH_CHUNK = 200
BATCH_PAUSE = 0.02
"""Seconds between chunks: each chunk is its own short transaction, so leases interleave."""
_VERIFY_PAGE = 1000
_RETRYABLE = [s.value for s in states.sources("requeue")]
_WORKER_VERBS = {
    enums_pb2.COMMAND_VERB_RESTART_WORKER,
    enums_pb2.COMMAND_VERB_RESIZE_POOL,
    enums_pb2.COMMAND_VERB_ADD_CONSUMER,
    enums_pb2.COMMAND_VERB_CANCEL_CONSUMER,
}


def _project(parent: str) -> str:
    return names.parse(parent, "parent").project


def _key(v: Violations, key: str) -> str:
    task_input.check_text(v, key, "idempotency_key", MAX_IDEMPOTENCY_KEY)
    return key


def command_sequence(name: str, field_path: str = "name") -> tuple[str, int]:
    """(project, sequence) of `projects/{project}/commands/{sequence}`."""
    parsed = names.parse(name, field_path, "commands")
    if not parsed.id.isdigit() or len(parsed.id) > 18 or int(parsed.id) < 1:
        raise InvalidArgument.of(field_path, "must name a command: projects/{project}/commands/{n}")
    return parsed.project, int(parsed.id)


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


class Commands:
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

    # Reading -----------------------------------------------------------------

    async def get(self, name: str) -> CommandRow:
        project, sequence = command_sequence(name)
        async with self._pool.connection() as conn:
            row = await store.get(conn, project, sequence)
        if row is None:
            raise NotFound(f"{name} does not exist", metadata={"resource": name})
        return row

    async def list_page(
        self, request: command_pb2.ListCommandsRequest
    ) -> tuple[list[CommandRow], str]:
        project = _project(request.parent)
        v = Violations()
        limit = paging.DEFAULT_PAGE_SIZE
        try:
            limit = paging.page_size(request.page_size)
        except InvalidArgument as error:
            v.items.extend(error.violations)
        f = request.filter
        statuses = []
        for status in f.statuses:
            if status == enums_pb2.COMMAND_STATUS_UNSPECIFIED or (
                status not in enums_pb2.CommandStatus.values()
            ):
                v.add("filter.statuses", f"{status} is not a command status")
            else:
                statuses.append(
                    enums_pb2.CommandStatus.Name(status).removeprefix("COMMAND_STATUS_")
                )
        verbs = []
        for verb in f.verbs:
            if (
                verb == enums_pb2.COMMAND_VERB_UNSPECIFIED
                or verb not in enums_pb2.CommandVerb.values()
            ):
                v.add("filter.verbs", f"{verb} is not a command verb")
            else:
                verbs.append(audit.verb_name(verb))
        after = before = None
        if f.HasField("create_time_after"):
            after = task_input.timestamp(v, f.create_time_after, "filter.create_time_after")
        if f.HasField("create_time_before"):
            before = task_input.timestamp(v, f.create_time_before, "filter.create_time_before")
        v.raise_if_any()
        fingerprint = f.SerializeToString(deterministic=True).hex()[:64]
        before_sequence = None
        if request.page_token:
            position = paging.decode_token(request.page_token, ("s", "fp"))
            if position["fp"] != fingerprint or not isinstance(position["s"], int):
                raise InvalidArgument.of("page_token", "was made for another filter")
            before_sequence = position["s"]
        query = CommandQuery(
            project=project,
            limit=limit + 1,
            statuses=statuses,
            verbs=verbs,
            issued_by=f.issued_by or None,
            create_time_after=after,
            create_time_before=before,
            before_sequence=before_sequence,
        )
        async with self._pool.connection() as conn:
            rows = await store.list_page(conn, query)
        token = ""
        if len(rows) > limit:
            rows = rows[:limit]
            token = paging.encode_token({"s": rows[-1].sequence, "fp": fingerprint})
        return rows, token

    async def verify(self, parent: str) -> audit.Verdict:
        """Recomputes the project's chain, a page at a time (a consistent snapshot)."""
        project = _project(parent)
        rows: list[CommandRow] = []
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            head = await store.head_sequence(conn, project)
            after = 0
            while True:
                page = await store.chain(conn, project, after=after, limit=_VERIFY_PAGE)
                rows.extend(page)
                if len(page) < _VERIFY_PAGE:
                    break
                after = page[-1].sequence
        return audit.verify_rows(self._key, rows, head)

    # Task commands -------------------------------------------------------------

    async def retry_task(
        self,
        principal: Principal,
        request: command_pb2.RetryTaskRequest,
    ) -> CommandRow:
        project = _project(request.parent)
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
        key = _key(v, request.idempotency_key)
        v.raise_if_any()
        assert task_id is not None
        args: dict[str, Any] = {"task": request.task}
        if input_json is not None:
            args["override_input"] = True
        async with self._pool.connection() as conn, conn.transaction():
            recorded = await audit.record(
                conn,
                self._key,
                principal,
                enums_pb2.COMMAND_VERB_RETRY_TASK,
                request.task,
                args,
                project=project,
                idempotency_key=key,
            )
            if recorded.existing:
                return recorded.command
            command = recorded.command
            rows = await task_commands.requeue(
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
            await store.set_status(
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
        project = _project(request.parent)
        v = Violations()
        if not 1 <= request.max <= MAX_BATCH_RETRY:
            v.add("max", f"must be between 1 and {MAX_BATCH_RETRY}")
        query = task_list.parse_filter(v, request.filter, project)
        key = _key(v, request.idempotency_key)
        v.raise_if_any()
        wanted = [s for s in (query.states or _RETRYABLE) if s in _RETRYABLE]
        args: dict[str, Any] = {
            "filter": _filter_json(request.filter),
            "max": request.max,
        }
        async with self._pool.connection() as conn, conn.transaction():
            recorded = await audit.record(
                conn,
                self._key,
                principal,
                enums_pb2.COMMAND_VERB_BATCH_RETRY_TASKS,
                request.parent,
                args,
                project=project,
                idempotency_key=key,
                status="ISSUED",
                result={"retried": 0, "skipped": 0, "done": False},
            )
        if recorded.existing:
            return recorded.command
        command = recorded.command
        query = replace(query, states=wanted, limit=self._chunk, order="id")
        self.jobs.spawn(self._run_batch(command, query, request.max, bool(wanted)))
        return command

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
                    done = await task_commands.requeue(
                        conn,
                        project,
                        [r.id for r in rows],
                        sources=_RETRYABLE,
                        reason="retried",
                        command=command.name,
                    )
                    retried += len(done)
                    skipped += len(rows) - len(done)
                    await store.set_status(
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
                await store.set_status(
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
                    await store.set_status(
                        conn,
                        project,
                        command.sequence,
                        status="FAILED",
                        sources=["ISSUED"],
                        result={"retried": retried, "skipped": skipped, "done": True},
                        error={"code": 13, "message": str(error)},
                    )

    # Queue commands ------------------------------------------------------------

    async def purge_queue(
        self, principal: Principal, request: command_pb2.PurgeQueueRequest
    ) -> CommandRow:
        project = _project(request.parent)
        v = Violations()
        if not request.queue:
            v.add("queue", "is required")
        elif not task_input.QUEUE_RE.match(request.queue):
            v.add("queue", task_input.QUEUE_RULE)
        if not request.force and not request.confirm_token:
            v.add("confirm_token", "is required unless force is set (GetQueue returns it)")
        key = _key(v, request.idempotency_key)
        v.raise_if_any()
        queue_name = f"projects/{project}/queues/{request.queue}"
        parse_queue_name(queue_name, "queue")
        args: dict[str, Any] = {"queue": request.queue, "force": request.force}
        async with self._pool.connection() as conn:
            if await queue_store.get(conn, project, request.queue) is None:
                raise NotFound(f"{queue_name} does not exist", metadata={"resource": queue_name})
            async with conn.transaction():
                recorded = await audit.record(
                    conn,
                    self._key,
                    principal,
                    enums_pb2.COMMAND_VERB_PURGE_QUEUE,
                    queue_name,
                    args,
                    project=project,
                    idempotency_key=key,
                )
                if recorded.existing:
                    return recorded.command
                command = recorded.command
                # The purge counts what it removes: the token must be for exactly that depth
                # (else the whole transaction, command included, rolls back).
                purged = await task_commands.purge_queue(
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
                await store.set_status(
                    conn,
                    project,
                    command.sequence,
                    status="SUCCEEDED",
                    sources=["SUCCEEDED"],
                    result=result,
                    quiet=True,
                )
        if request.force:
            _log.critical(
                "queue purged with force",
                queue=queue_name,
                issued_by=principal.key_name,
                purged=purged,
                command=command.name,
            )
        return replace(command, result=result)

    # Worker control ------------------------------------------------------------

    async def worker_command(
        self,
        principal: Principal,
        *,
        parent: str,
        verb: int,
        worker: str,
        args: dict[str, Any],
        ack_timeout: timedelta | None,
        idempotency_key: str,
    ) -> CommandRow:
        """Records a command for one worker; its Connect stream delivers it."""
        assert verb in _WORKER_VERBS
        project = _project(parent)
        v = Violations()
        worker_name = ""
        try:
            worker_name = worker_id(worker, project, "worker") if worker else ""
            if not worker:
                v.add("worker", "is required")
        except InvalidArgument as error:
            v.items.extend(error.violations)
        if verb == enums_pb2.COMMAND_VERB_RESIZE_POOL:
            delta = args.get("delta", 0)
            if delta == 0 or not -MAX_DELTA <= delta <= MAX_DELTA:
                v.add("delta", f"must be between -{MAX_DELTA} and {MAX_DELTA}, and not 0")
        if verb in (enums_pb2.COMMAND_VERB_ADD_CONSUMER, enums_pb2.COMMAND_VERB_CANCEL_CONSUMER):
            queue = args.get("queue", "")
            if not queue:
                v.add("queue", "is required")
            elif not task_input.QUEUE_RE.match(queue):
                v.add("queue", task_input.QUEUE_RULE)
        if ack_timeout is not None and not timedelta(0) <= ack_timeout <= MAX_TIMEOUT:
            v.add("timeout", "must be between 0 (the default, 60s) and 24h")
        key = _key(v, idempotency_key)
        v.raise_if_any()
        wait = ack_timeout or DEFAULT_TIMEOUT
        target = f"projects/{project}/workers/{worker_name}"
        async with self._pool.connection() as conn, conn.transaction():
            recorded = await audit.record(
                conn,
                self._key,
                principal,
                verb,
                target,
                args,
                project=project,
                idempotency_key=key,
                status="ISSUED",
                worker=worker_name,
                timeout_ms=int(wait / timedelta(milliseconds=1)),
            )
        return recorded.command

    async def set_rate_limit(
        self, principal: Principal, request: command_pb2.SetRateLimitRequest
    ) -> CommandRow:
        """Limits how fast tasks of a kind are leased (by one worker, or by all)."""
        project = _project(request.parent)
        v = Violations()
        if not request.kind:
            v.add("kind", "is required")
        elif len(request.kind) > task_input.MAX_KIND:
            v.add("kind", f"must be at most {task_input.MAX_KIND} characters")
        rate = ""
        if not request.rate_limit.strip():
            v.add("rate_limit", "is required (0 clears the limit)")
        else:
            try:
                rate = rates.normalise(request.rate_limit, "rate_limit")
            except InvalidArgument as error:
                v.items.extend(error.violations)
        worker = ""
        if request.worker:
            try:
                worker = worker_id(request.worker, project, "worker")
            except InvalidArgument as error:
                v.items.extend(error.violations)
        key = _key(v, request.idempotency_key)
        v.raise_if_any()
        target = f"projects/{project}/workers/{worker}" if worker else request.parent
        args = {"kind": request.kind, "rate_limit": rate, "worker": worker}
        async with self._pool.connection() as conn, conn.transaction():
            recorded = await audit.record(
                conn,
                self._key,
                principal,
                enums_pb2.COMMAND_VERB_SET_RATE_LIMIT,
                target,
                args,
                project=project,
                idempotency_key=key,
                result={"rate_limit": rate},
            )
            if not recorded.existing:
                await task_commands.set_kind_rate(conn, project, request.kind, worker, rate)
        return recorded.command

    async def dispatch(
        self, project: str, worker: str, *, redeliver: bool
    ) -> list[store.Dispatched]:
        """The open commands of a worker, now DISPATCHED to the caller's stream."""
        async with self._pool.connection() as conn, conn.transaction():
            return await store.dispatch(conn, project, worker, redeliver=redeliver)

    async def acknowledge(
        self,
        project: str,
        worker: str,
        name: str,
        *,
        ok: bool,
        error: str,
        result: dict[str, Any],
    ) -> bool:
        """SUCCEEDED or FAILED on a worker's CommandAck; False when it does not apply
        (unknown, another worker's, or already finished: an ack after its timeout)."""
        try:
            ack_project, sequence = command_sequence(name, "command_ack.command")
        except InvalidArgument:
            return False
        if ack_project != project:
            return False
        async with self._pool.connection() as conn, conn.transaction():
            row = await store.get(conn, project, sequence)
            if row is None or row.worker != worker:
                return False
            return await store.set_status(
                conn,
                project,
                sequence,
                status="SUCCEEDED" if ok else "FAILED",
                sources=["ISSUED", "DISPATCHED"],
                result=result,
                error=None if ok else {"code": 9, "message": error or "the worker refused it"},
            )


def _filter_json(task_filter: task_pb2.TaskFilter) -> dict[str, Any]:
    value: dict[str, Any] = json_format.MessageToDict(task_filter)
    return value
