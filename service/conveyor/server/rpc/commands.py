"""CommandService: operator commands, and reading and verifying the audit log."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import struct_pb2
from google.rpc import status_pb2

from conveyor.server.domain import audit
from conveyor.server.domain.command_log import CommandLog
from conveyor.server.domain.task_commands import TaskCommands
from conveyor.server.domain.worker_commands import WorkerCommands
from conveyor.server.render.convert import timestamp, to_timedelta
from conveyor.server.rpc import principal
from conveyor.server.store.commands import CommandRow
from conveyor.v1 import command_pb2, command_pb2_grpc, enums_pb2

__all__ = ["CommandServicer", "command_message", "struct"]

Context = grpc.aio.ServicerContext[Any, Any]


def struct(value: dict[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(value)
    return message


def command_message(row: CommandRow) -> command_pb2.Command:
    error = None
    if row.error:
        error = status_pb2.Status(
            code=int(row.error.get("code", 2)), message=str(row.error.get("message", ""))
        )
    return command_pb2.Command(
        name=row.name,
        verb=enums_pb2.CommandVerb.Value(f"COMMAND_VERB_{row.verb}"),
        target=row.target,
        args=struct(row.args),
        status=(
            enums_pb2.CommandStatus.Value(f"COMMAND_STATUS_{row.status}")
            if row.status
            else enums_pb2.COMMAND_STATUS_UNSPECIFIED
        ),
        issued_by=row.issued_by,
        idempotency_key=row.idempotency_key,
        result=struct(row.result),
        error=error,
        sequence=row.sequence,
        prev_digest=row.prev_digest,
        digest=row.digest,
        signature=row.signature,
        create_time=timestamp(row.create_time),
        dispatch_time=timestamp(row.dispatch_time),
        finish_time=timestamp(row.finish_time),
        severity=enums_pb2.CommandSeverity.Value(
            f"COMMAND_SEVERITY_{audit.severity(row.verb, row.args)}"
        ),
        **_counts(row.verb, row.result),
    )


def _count(result: dict[str, Any], key: str) -> int:
    value = result.get(key)
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


def _counts(verb: str, result: dict[str, Any]) -> dict[str, int]:
    """The typed counts of a command's result, for the verbs whose result the contract
    knows (the Struct keeps them as doubles)."""
    if verb == "PURGE_QUEUE":
        return {"purged_count": _count(result, "purged")}
    if verb == "BATCH_RETRY_TASKS":
        return {
            "retried_count": _count(result, "retried"),
            "skipped_count": _count(result, "skipped"),
        }
    if verb == "RETRY_TASK":
        return {"retried_count": 1 if result.get("task") else 0}
    return {}


def _timeout(request: Any) -> Any:
    return to_timedelta(request.timeout) if request.HasField("timeout") else None


class CommandServicer(command_pb2_grpc.CommandServiceServicer):
    def __init__(
        self, log: CommandLog, task_commands: TaskCommands, worker_commands: WorkerCommands
    ) -> None:
        self._log = log
        self._task_commands = task_commands
        self._worker_commands = worker_commands

    async def RetryTask(
        self, request: command_pb2.RetryTaskRequest, context: Context
    ) -> command_pb2.Command:
        return command_message(await self._task_commands.retry_task(principal.current(), request))

    async def BatchRetryTasks(
        self, request: command_pb2.BatchRetryTasksRequest, context: Context
    ) -> command_pb2.Command:
        return command_message(await self._task_commands.batch_retry(principal.current(), request))

    async def PurgeQueue(
        self, request: command_pb2.PurgeQueueRequest, context: Context
    ) -> command_pb2.Command:
        return command_message(await self._task_commands.purge_queue(principal.current(), request))

    async def RestartWorker(
        self, request: command_pb2.RestartWorkerRequest, context: Context
    ) -> command_pb2.Command:
        return await self._worker(
            request, enums_pb2.COMMAND_VERB_RESTART_WORKER, {}, request.idempotency_key
        )

    async def ResizePool(
        self, request: command_pb2.ResizePoolRequest, context: Context
    ) -> command_pb2.Command:
        return await self._worker(
            request,
            enums_pb2.COMMAND_VERB_RESIZE_POOL,
            {"delta": request.delta},
            request.idempotency_key,
        )

    async def AddConsumer(
        self, request: command_pb2.AddConsumerRequest, context: Context
    ) -> command_pb2.Command:
        return await self._worker(
            request,
            enums_pb2.COMMAND_VERB_ADD_CONSUMER,
            {"queue": request.queue},
            request.idempotency_key,
        )

    async def CancelConsumer(
        self, request: command_pb2.CancelConsumerRequest, context: Context
    ) -> command_pb2.Command:
        return await self._worker(
            request,
            enums_pb2.COMMAND_VERB_CANCEL_CONSUMER,
            {"queue": request.queue},
            request.idempotency_key,
        )

    async def _worker(
        self, request: Any, verb: int, args: dict[str, Any], key: str
    ) -> command_pb2.Command:
        row = await self._worker_commands.worker_command(
            principal.current(),
            parent=request.parent,
            verb=verb,
            worker=request.worker,
            args=args,
            ack_timeout=_timeout(request),
            idempotency_key=key,
        )
        return command_message(row)

    async def SetRateLimit(
        self, request: command_pb2.SetRateLimitRequest, context: Context
    ) -> command_pb2.Command:
        return command_message(
            await self._worker_commands.set_rate_limit(principal.current(), request)
        )

    async def GetCommand(
        self, request: command_pb2.GetCommandRequest, context: Context
    ) -> command_pb2.Command:
        return command_message(await self._log.get(request.name))

    async def ListCommands(
        self, request: command_pb2.ListCommandsRequest, context: Context
    ) -> command_pb2.ListCommandsResponse:
        rows, token = await self._log.list_page(request)
        return command_pb2.ListCommandsResponse(
            commands=[command_message(r) for r in rows], next_page_token=token
        )

    async def VerifyAuditLog(
        self, request: command_pb2.VerifyAuditLogRequest, context: Context
    ) -> command_pb2.VerifyAuditLogResponse:
        verdict = await self._log.verify(request.parent)
        return command_pb2.VerifyAuditLogResponse(
            ok=verdict.ok,
            verified_count=verdict.verified_count,
            first_bad_sequence=verdict.first_bad_sequence,
        )
