"""Worker control: commands addressed to one worker (restart, resize, add or cancel a
consumer), rate limits by task kind, and their delivery over a worker's Connect stream
and acknowledgement.

Worker-control commands are recorded ISSUED and stay so until a worker's Connect stream
takes them (DISPATCHED) and acknowledges them (SUCCEEDED or FAILED), or they time out.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from psycopg_pool import AsyncConnectionPool

from conveyor.server.domain import audit, names, rates, task_input
from conveyor.server.domain.auth import Principal
from conveyor.server.domain.command_input import (
    check_idempotency_key,
    command_sequence,
    parent_project,
)
from conveyor.server.domain.workers import worker_id
from conveyor.server.errors import InvalidArgument, Violations
from conveyor.server.store import commands as command_store
from conveyor.server.store import task_commands as task_command_store
from conveyor.server.store.commands import CommandRow
from conveyor.v1 import command_pb2, enums_pb2

__all__ = ["WorkerCommands"]

MAX_DELTA = 100
DEFAULT_TIMEOUT = timedelta(seconds=60)
MAX_TIMEOUT = timedelta(hours=24)
_WORKER_VERBS = {
    enums_pb2.COMMAND_VERB_RESTART_WORKER,
    enums_pb2.COMMAND_VERB_RESIZE_POOL,
    enums_pb2.COMMAND_VERB_ADD_CONSUMER,
    enums_pb2.COMMAND_VERB_CANCEL_CONSUMER,
}


class WorkerCommands:
    def __init__(self, pool: AsyncConnectionPool[Any], server_key: bytes) -> None:
        self._pool = pool
        self._key = server_key

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
        project = parent_project(parent)
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
            else:
                names.check_queue(v, queue, "queue")
        if ack_timeout is not None and not timedelta(0) <= ack_timeout <= MAX_TIMEOUT:
            v.add("timeout", "must be between 0 (the default, 60s) and 24h")
        key = check_idempotency_key(v, idempotency_key)
        v.raise_if_any()
        wait = ack_timeout or DEFAULT_TIMEOUT
        target = f"projects/{project}/workers/{worker_name}"
        async with audit.command(
            self._pool,
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
        ) as issued:
            return issued.command

    async def set_rate_limit(
        self, principal: Principal, request: command_pb2.SetRateLimitRequest
    ) -> CommandRow:
        """Limits how fast tasks of a kind are leased (by one worker, or by all)."""
        project = parent_project(request.parent)
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
        key = check_idempotency_key(v, request.idempotency_key)
        v.raise_if_any()
        target = f"projects/{project}/workers/{worker}" if worker else request.parent
        args = {"kind": request.kind, "rate_limit": rate, "worker": worker}
        async with audit.command(
            self._pool,
            self._key,
            principal,
            enums_pb2.COMMAND_VERB_SET_RATE_LIMIT,
            target,
            args,
            project=project,
            idempotency_key=key,
            result={"rate_limit": rate},
        ) as issued:
            if not issued.existing:
                await task_command_store.set_kind_rate(
                    issued.conn, project, request.kind, worker, rate
                )
        return issued.command

    async def dispatch(
        self, project: str, worker: str, *, redeliver: bool
    ) -> list[command_store.Dispatched]:
        """The open commands of a worker, now DISPATCHED to the caller's stream."""
        async with self._pool.connection() as conn, conn.transaction():
            return await command_store.dispatch(conn, project, worker, redeliver=redeliver)

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
            row = await command_store.get(conn, project, sequence)
            if row is None or row.worker != worker:
                return False
            return await command_store.set_status(
                conn,
                project,
                sequence,
                status="SUCCEEDED" if ok else "FAILED",
                sources=["ISSUED", "DISPATCHED"],
                result=result,
                error=None if ok else {"code": 9, "message": error or "the worker refused it"},
            )
