"""Seed 001, the brain's /commands: its nine command bodies as v1 CommandService (and
TaskService.CancelTask) requests, and v1 Commands as its command records. Pure mapping,
no I/O; docs/compat/001-celery-brain.md explains each choice.

Every bound the seed states (max 1..10000, delta -100..100, override_kwargs <= 64 KiB,
the rate grammar, the purge token or force) is v1's own and is checked once, by v1.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message

from conveyor.server.compat.body import Fields, check, comma_list, page_of, rfc3339, value_of
from conveyor.server.compat.celery_tasks import ENGINE, STATES, project_of, task_name
from conveyor.server.errors import Violations
from conveyor.server.gateway.jsonform import to_json
from conveyor.v1 import command_pb2, enums_pb2, task_pb2, task_service_pb2

__all__ = [
    "COMMANDS",
    "STATUSES",
    "Command",
    "build",
    "command_public",
    "list_request",
]

STATUSES: dict[str, enums_pb2.CommandStatus.ValueType] = {
    "issued": enums_pb2.COMMAND_STATUS_ISSUED,
    "dispatched": enums_pb2.COMMAND_STATUS_DISPATCHED,
    "succeeded": enums_pb2.COMMAND_STATUS_SUCCEEDED,
    "failed": enums_pb2.COMMAND_STATUS_FAILED,
    "timed_out": enums_pb2.COMMAND_STATUS_TIMED_OUT,
}
_STATUS_NAMES = {number: name for name, number in STATUSES.items()}

# v1 verbs under the brain's action names (the route names of its /commands router).
_ACTIONS: dict[enums_pb2.CommandVerb.ValueType, str] = {
    enums_pb2.COMMAND_VERB_RETRY_TASK: "retry-task",
    enums_pb2.COMMAND_VERB_CANCEL_TASK: "cancel-task",
    enums_pb2.COMMAND_VERB_BATCH_RETRY_TASKS: "bulk-retry",
    enums_pb2.COMMAND_VERB_PURGE_QUEUE: "purge-queue",
    enums_pb2.COMMAND_VERB_RESTART_WORKER: "restart-worker",
    enums_pb2.COMMAND_VERB_RESIZE_POOL: "pool-resize",
    enums_pb2.COMMAND_VERB_ADD_CONSUMER: "add-consumer",
    enums_pb2.COMMAND_VERB_CANCEL_CONSUMER: "cancel-consumer",
    enums_pb2.COMMAND_VERB_SET_RATE_LIMIT: "rate-limit",
    enums_pb2.COMMAND_VERB_BATCH_DELETE_TASKS: "bulk-delete",
}


@dataclass(frozen=True)
class Command:
    """One of the brain's command routes: the v1 method and how its body maps."""

    rpc: str
    build: Callable[[str, Fields], Message]
    renames: Mapping[str, str]
    """v1 field path -> the body's field, for error messages."""


def _engine(f: Fields) -> None:
    engine = f.text("engine")
    if engine and engine != ENGINE:
        f.violations.add("engine", f"must be {ENGINE!r}: Conveyor is this brain's one engine")


def _worker(f: Fields) -> str:
    """The targeted worker: `agent_id`, a Conveyor worker id as ListWorkers shows it.

    The brain's agent drives engine workers on its host; in Conveyor the agent and its
    worker are one process, the Conveyor worker, so `worker_name` (the engine-native
    `celery@host`) names the same process and is only checked to be a string.
    """
    f.text("worker_name")
    return f.text("agent_id", required=True)


def _retry_task(slug: str, f: Fields) -> Message:
    f.text("agent_id")
    _engine(f)
    request = command_pb2.RetryTaskRequest(
        parent=project_of(slug),
        task=task_name(slug, f.text("task_id", required=True)),
        idempotency_key=f.text("idempotency_key"),
    )
    override = f.obj("override_kwargs")
    if override is not None:
        request.override_input.CopyFrom(value_of(override))
    return request


def _cancel_task(slug: str, f: Fields) -> Message:
    f.text("agent_id")
    _engine(f)
    # The idempotency_key is v1's request_id: a repeat answers the first cancel (the
    # task, then the command it recorded) instead of FAILED_PRECONDITION.
    return task_service_pb2.CancelTaskRequest(
        name=task_name(slug, f.text("task_id", required=True)),
        reason="cancel-task command",
        request_id=f.text("idempotency_key"),
    )


def _bulk_retry(slug: str, f: Fields) -> Message:
    f.text("agent_id")
    selector = Fields(f.obj("filter") or {}, f.violations)
    found = task_pb2.TaskFilter()
    for state in comma_list([selector.text("state")]):
        states = STATES.get(state.lower())
        if states is None:
            f.violations.add("filter.state", f"{state!r} is not one of {', '.join(STATES)}")
        else:
            found.states.extend(s for s in states if s not in found.states)
    if selector.text("queue"):
        found.queues.append(selector.text("queue"))
    if selector.text("name"):
        found.kinds.append(selector.text("name"))
    return command_pb2.BatchRetryTasksRequest(
        parent=project_of(slug),
        filter=found,
        max=f.integer("max", required=True) or 0,
        idempotency_key=f.text("idempotency_key"),
    )


def _purge_queue(slug: str, f: Fields) -> Message:
    f.text("agent_id")
    return command_pb2.PurgeQueueRequest(
        parent=project_of(slug),
        queue=f.text("queue", required=True),
        confirm_token=f.text("confirm_token"),
        force=bool(f.flag("force")),
        idempotency_key=f.text("idempotency_key"),
    )


def _restart_worker(slug: str, f: Fields) -> Message:
    return command_pb2.RestartWorkerRequest(
        parent=project_of(slug), worker=_worker(f), idempotency_key=f.text("idempotency_key")
    )


def _pool_resize(slug: str, f: Fields) -> Message:
    return command_pb2.ResizePoolRequest(
        parent=project_of(slug),
        worker=_worker(f),
        delta=f.integer("delta", required=True) or 0,
        idempotency_key=f.text("idempotency_key"),
    )


def _consumer(
    cls: type[command_pb2.AddConsumerRequest] | type[command_pb2.CancelConsumerRequest],
) -> Callable[[str, Fields], Message]:
    def build(slug: str, f: Fields) -> Message:
        return cls(
            parent=project_of(slug),
            worker=_worker(f),
            queue=f.text("queue", required=True),
            idempotency_key=f.text("idempotency_key"),
        )

    return build


def _rate_limit(slug: str, f: Fields) -> Message:
    # An empty worker_name broadcasts to every worker; one names the agent's worker.
    agent = f.text("agent_id", required=True)
    return command_pb2.SetRateLimitRequest(
        parent=project_of(slug),
        kind=f.text("task_name", required=True),
        rate_limit=f.text("rate", required=True),
        worker=agent if f.text("worker_name") else "",
        idempotency_key=f.text("idempotency_key"),
    )


_CMD = "conveyor.v1.CommandService."
_WORKER_RENAMES = {"worker": "agent_id"}
COMMANDS: dict[str, Command] = {
    "retry-task": Command(
        _CMD + "RetryTask", _retry_task, {"task": "task_id", "override_input": "override_kwargs"}
    ),
    "cancel-task": Command(
        "conveyor.v1.TaskService.CancelTask",
        _cancel_task,
        {"name": "task_id", "request_id": "idempotency_key"},
    ),
    "bulk-retry": Command(
        _CMD + "BatchRetryTasks",
        _bulk_retry,
        {
            "filter.states": "filter.state",
            "filter.kinds": "filter.name",
            "filter.queues": "filter.queue",
        },
    ),
    "purge-queue": Command(_CMD + "PurgeQueue", _purge_queue, {}),
    "restart-worker": Command(_CMD + "RestartWorker", _restart_worker, _WORKER_RENAMES),
    "pool-resize": Command(_CMD + "ResizePool", _pool_resize, _WORKER_RENAMES),
    "add-consumer": Command(
        _CMD + "AddConsumer", _consumer(command_pb2.AddConsumerRequest), _WORKER_RENAMES
    ),
    "cancel-consumer": Command(
        _CMD + "CancelConsumer", _consumer(command_pb2.CancelConsumerRequest), _WORKER_RENAMES
    ),
    "rate-limit": Command(
        _CMD + "SetRateLimit",
        _rate_limit,
        {"kind": "task_name", "rate_limit": "rate", "worker": "agent_id"},
    ),
}


def build(action: str, slug: str, body: Mapping[str, Any]) -> Message:
    """The v1 request of a command body; INVALID_ARGUMENT for a wrong JSON type."""
    f = Fields(body)
    request = COMMANDS[action].build(slug, f)
    f.check()
    return request


def list_request(slug: str, q: Mapping[str, list[str]]) -> command_pb2.ListCommandsRequest:
    """GET .../commands?status=&cursor=&limit= -> ListCommands."""
    v = Violations()
    request = command_pb2.ListCommandsRequest(parent=project_of(slug))
    for status in comma_list(q.get("status", [])):
        number = STATUSES.get(status.lower())
        if number is None:
            v.add("status", f"{status!r} is not one of {', '.join(STATUSES)}")
        else:
            request.filter.statuses.append(number)
    request.page_token, request.page_size = page_of(v, q)
    check(v)
    return request


def _worker_of(command: command_pb2.Command) -> str | None:
    if "/workers/" in command.target:
        return command.target.rsplit("/", 1)[-1]
    return None


def command_public(command: command_pb2.Command, slug: str) -> dict[str, Any]:
    """A v1 Command as the brain's command record, audit chain included."""
    verb = command.verb
    args = to_json(command.args) if command.HasField("args") else {}
    error = None
    if command.HasField("error"):
        error = {"code": command.error.code, "message": command.error.message}
    return {
        "id": command.name.rsplit("/", 1)[-1],
        "project_id": slug,
        "type": _ACTIONS.get(verb, enums_pb2.CommandVerb.Name(verb)[13:].lower()),
        "status": _STATUS_NAMES.get(command.status, "issued"),
        "agent_id": _worker_of(command),
        "target": command.target,
        "args": args,
        "result": to_json(command.result) if command.HasField("result") else None,
        "error": error,
        "severity": "critical"
        if command.severity == enums_pb2.COMMAND_SEVERITY_CRITICAL
        else "normal",
        "issued_by": command.issued_by,
        "idempotency_key": command.idempotency_key or None,
        "sequence": command.sequence,
        "prev_digest": command.prev_digest or None,
        "digest": command.digest,
        "signature": command.signature,
        "issued_at": rfc3339(command, "create_time"),
        "dispatched_at": rfc3339(command, "dispatch_time"),
        "finished_at": rfc3339(command, "finish_time"),
    }
