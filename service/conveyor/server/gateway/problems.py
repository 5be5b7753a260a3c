"""google.rpc.Status -> RFC 9457 application/problem+json.

    {
      "type": "https://conveyor.dev/problems/queue-paused",
      "title": "Queue paused",
      "status": 412,
      "detail": "queue projects/acme/queues/default is paused",
      "code": "queue_paused",
      "instance": "/v1/projects/acme/tasks:lease",
      "request_id": "3f2c...",
      "errors": [{"field": "task.kind", "description": "is required"}],
      "retry_after_seconds": 1.5,
      "allowed_actions": [{"rel": "resume", "method": "POST",
                           "href": "/v1/projects/acme/queues/default:resume",
                           "operation_id": "QueueService_ResumeQueue", "hint": "..."}],
      "metadata": {...}, "preconditions": [...]
    }

`type`, `title` and `code` come from the ErrorInfo reason (so a client switches on
`code`), `status` from the gRPC code, `errors` from BadRequest, `preconditions` from
PreconditionFailure, `retry_after_seconds` (and the Retry-After header) from RetryInfo.
`errors` and `allowed_actions` are always present, possibly empty.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import DecodeError, Message
from google.rpc import code_pb2, error_details_pb2, status_pb2

from conveyor.server.errors import FieldViolation
from conveyor.server.gateway.routes import Router

__all__ = [
    "ACTIONS",
    "HTTP_STATUS",
    "MEDIA_TYPE",
    "PROBLEM_TYPE_BASE",
    "Problem",
    "from_rpc_error",
    "from_status",
    "problem",
]

PROBLEM_TYPE_BASE = "https://conveyor.dev/problems/"
MEDIA_TYPE = "application/problem+json"

# google.rpc.Code -> HTTP status, as google/rpc/code.proto documents it, except
# FAILED_PRECONDITION: 412 rather than 400, so a client can tell "the resource is not
# in a state that allows this" (re-read it) from "your request is malformed" (fix it).
HTTP_STATUS: dict[int, int] = {
    code_pb2.OK: 200,
    code_pb2.CANCELLED: 499,
    code_pb2.UNKNOWN: 500,
    code_pb2.INVALID_ARGUMENT: 400,
    code_pb2.DEADLINE_EXCEEDED: 504,
    code_pb2.NOT_FOUND: 404,
    code_pb2.ALREADY_EXISTS: 409,
    code_pb2.PERMISSION_DENIED: 403,
    code_pb2.UNAUTHENTICATED: 401,
    code_pb2.RESOURCE_EXHAUSTED: 429,
    code_pb2.FAILED_PRECONDITION: 412,
    code_pb2.ABORTED: 409,
    code_pb2.OUT_OF_RANGE: 400,
    code_pb2.UNIMPLEMENTED: 501,
    code_pb2.INTERNAL: 500,
    code_pb2.UNAVAILABLE: 503,
    code_pb2.DATA_LOSS: 500,
}

_DETAILS_KEY = "grpc-status-details-bin"


@dataclass(frozen=True)
class Problem:
    """A problem document with the headers that go with it."""

    body: dict[str, Any]
    headers: dict[str, str]

    @property
    def status(self) -> int:
        return int(self.body["status"])


@dataclass(frozen=True)
class Action:
    """A next step suggested for an error reason: another method, with its href."""

    rel: str
    rpc: str
    """The method's full name, e.g. `conveyor.v1.QueueService.ResumeQueue`."""
    resource: str
    """Which resource fills the method's path: `queue`, `task` or `project`."""
    hint: str


# ErrorInfo reason -> what the caller may do next.
ACTIONS: dict[str, tuple[Action, ...]] = {
    "QUEUE_PAUSED": (
        Action(
            "resume",
            "conveyor.v1.QueueService.ResumeQueue",
            "queue",
            "The queue is paused; resume it (operator) to lease from it again.",
        ),
    ),
    "PURGE_TOKEN_STALE": (
        Action(
            "refresh",
            "conveyor.v1.QueueService.GetQueue",
            "queue",
            "The queue's depth changed since its purge_confirm_token was read; read the "
            "queue again and purge with the new token.",
        ),
    ),
    "LEASE_STALE": (
        Action(
            "lease",
            "conveyor.v1.WorkerService.LeaseTasks",
            "project",
            "This lease expired and the task moved on; drop the work and lease again.",
        ),
    ),
    "TASK_STATE_CONFLICT": (
        Action(
            "refresh",
            "conveyor.v1.TaskService.GetTask",
            "task",
            "The task is not in a state that allows this; read it to see where it is.",
        ),
    ),
}


def _title(reason: str) -> str:
    return reason.replace("_", " ").capitalize()


def _unpack(details: Sequence[any_pb2.Any]) -> dict[str, Message]:
    found: dict[str, Message] = {}
    for packed in details:
        for cls in (
            error_details_pb2.ErrorInfo,
            error_details_pb2.BadRequest,
            error_details_pb2.PreconditionFailure,
            error_details_pb2.RetryInfo,
        ):
            if packed.TypeName() == cls.DESCRIPTOR.full_name:
                message = cls()
                packed.Unpack(message)
                found.setdefault(cls.DESCRIPTOR.name, message)
    return found


def problem(
    http_status: int,
    reason: str,
    detail: str,
    instance: str,
    *,
    violations: Sequence[FieldViolation] = (),
    headers: Mapping[str, str] | None = None,
    request_id: str = "",
    extra: Mapping[str, Any] | None = None,
) -> Problem:
    """A problem the gateway raises itself (404, 405, a bad body...)."""
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + reason.lower().replace("_", "-"),
        "title": _title(reason),
        "status": http_status,
        "detail": detail,
        "code": reason.lower(),
        "instance": instance,
        "errors": [{"field": v.field, "description": v.description} for v in violations],
        "allowed_actions": [],
    }
    if request_id:
        body["request_id"] = request_id
    body.update(extra or {})
    return Problem(body, dict(headers or {}))


def from_status(
    status: status_pb2.Status,
    instance: str,
    *,
    router: Router | None = None,
    request: Message | None = None,
    request_id: str = "",
) -> Problem:
    """The problem for a google.rpc.Status answered by the service."""
    details = _unpack(status.details)
    info = details.get("ErrorInfo")
    code_name = code_pb2.Code.Name(status.code) if status.code in HTTP_STATUS else "UNKNOWN"
    reason = (
        info.reason if isinstance(info, error_details_pb2.ErrorInfo) and info.reason else code_name
    )
    http_status = HTTP_STATUS.get(status.code, 500)
    violations: list[FieldViolation] = []
    bad_request = details.get("BadRequest")
    if isinstance(bad_request, error_details_pb2.BadRequest):
        violations = [FieldViolation(v.field, v.description) for v in bad_request.field_violations]
    headers: dict[str, str] = {}
    extra: dict[str, Any] = {}
    retry = details.get("RetryInfo")
    if isinstance(retry, error_details_pb2.RetryInfo):
        seconds = retry.retry_delay.seconds + retry.retry_delay.nanos / 1e9
        extra["retry_after_seconds"] = seconds
        headers["Retry-After"] = str(max(0, math.ceil(seconds)))
    failure = details.get("PreconditionFailure")
    if isinstance(failure, error_details_pb2.PreconditionFailure):
        extra["preconditions"] = [
            {"type": v.type, "subject": v.subject, "description": v.description}
            for v in failure.violations
        ]
    metadata = dict(info.metadata) if isinstance(info, error_details_pb2.ErrorInfo) else {}
    if metadata:
        extra["metadata"] = metadata
    if http_status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="conveyor"'
    built = problem(
        http_status,
        reason,
        status.message or code_name.replace("_", " ").lower(),
        instance,
        violations=violations,
        headers=headers,
        request_id=request_id,
        extra=extra,
    )
    if router is not None:
        built.body["allowed_actions"] = allowed_actions(router, reason, metadata, request)
    return built


def from_rpc_error(
    error: grpc.aio.AioRpcError,
    instance: str,
    *,
    router: Router | None = None,
    request: Message | None = None,
    request_id: str = "",
) -> Problem:
    """The problem for a failed call: the rich status from its trailer, else code + text."""
    status: status_pb2.Status | None = None
    for key, value in error.trailing_metadata() or ():
        if key == _DETAILS_KEY and isinstance(value, bytes):
            try:
                status = status_pb2.Status.FromString(value)
            except DecodeError:
                status = None
    if status is None:
        status = status_pb2.Status(code=error.code().value[0], message=error.details() or "")
    return from_status(status, instance, router=router, request=request, request_id=request_id)


def allowed_actions(
    router: Router, reason: str, metadata: Mapping[str, str], request: Message | None
) -> list[dict[str, str]]:
    """The ACTIONS for `reason` whose href can be filled from the error and the request."""
    out: list[dict[str, str]] = []
    for action in ACTIONS.get(reason, ()):
        binding = router.by_rpc(action.rpc)
        if binding is None or len(binding.template.variables) != 1:
            continue
        name = _RESOURCES[action.resource](metadata, _request_strings(request))
        if name is None:
            continue
        href = binding.template.expand({binding.template.variables[0].field_path: name})
        if href is None:
            continue
        out.append(
            {
                "rel": action.rel,
                "method": binding.http_method,
                "href": href,
                "operation_id": binding.operation_id,
                "hint": action.hint,
            }
        )
    return out


def _request_strings(request: Message | None) -> dict[str, str]:
    if request is None:
        return {}
    return {
        field.name: value
        for field, value in request.ListFields()
        if isinstance(value, str) and value
    }


def _project(*sources: Mapping[str, str]) -> str | None:
    for source in sources:
        for value in source.values():
            parts = value.split("/")
            if len(parts) >= 2 and parts[0] == "projects" and parts[1]:
                return f"projects/{parts[1]}"
    return None


def _named(
    collection: str, key: str
) -> Callable[[Mapping[str, str], Mapping[str, str]], str | None]:
    """Finds `projects/*/<collection>/*`: a full name in the error or the request, or a
    short id under `key` joined to the request's project."""

    def find(metadata: Mapping[str, str], request: Mapping[str, str]) -> str | None:
        for source in (metadata, request):
            for value in source.values():
                parts = value.split("/")
                if len(parts) == 4 and parts[0] == "projects" and parts[2] == collection:
                    return value
        short = metadata.get(key) or request.get(key)
        project = _project(metadata, request)
        if short and "/" not in short and project:
            return f"{project}/{collection}/{short}"
        return None

    return find


_RESOURCES: dict[str, Callable[[Mapping[str, str], Mapping[str, str]], str | None]] = {
    "queue": _named("queues", "queue"),
    "task": _named("tasks", "task"),
    "project": lambda metadata, request: _project(metadata, request),
}
